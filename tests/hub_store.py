"""State of the loopback test Hub (see hub_server.py): repos, commits, and a content store on disk.

Files are kept by sha256; each commit maps paths to blobs and carries the ids the Hub reports: the
git blob sha1 for regular files, the sha1 of the LFS pointer plus the sha256 for LFS files.
"""

from __future__ import annotations

import datetime
import fnmatch
import hashlib
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

USER = "test-user"
# What the real Hub puts in a new repo's first commit; its patterns decide which files are LFS.
GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z *.arrow *.bin *.bz2 *.ckpt *.ftz *.gz *.h5 *.joblib *.lfs.* *.mlmodel *.model *.msgpack *.npy"
        " *.npz *.onnx *.ot *.parquet *.pb *.pickle *.pkl *.pt *.pth *.rar *.safetensors *.tar.* *.tar"
        " *.tflite *.tgz *.wasm *.xz *.zip *.zst *tfevents*"
    ).split()
)
LFS_MIN_SIZE = 10 * 1024 * 1024  # the Hub refuses regular (non-LFS) files above 10 MB


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class Blob:
    """One file version. `git_oid` is the id git stores: the file's own, or its LFS pointer's."""

    size: int
    sha256: str
    git_oid: str
    lfs: bool

    @classmethod
    def for_lfs(cls, sha256: str, size: int) -> Blob:
        return cls(size, sha256, _git_blob_id(_lfs_pointer(sha256, size)), True)

    @property
    def pointer_size(self) -> int:
        return len(_lfs_pointer(self.sha256, self.size))


@dataclass
class Commit:
    files: dict[str, Blob]
    title: str
    date: str


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created: str
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> str:
        sha = self.branches.get(revision) or (revision if revision in self.commits else None)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return sha


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.commit = status, message, code, commit


class HubStore:
    """Repos in memory, file contents on disk keyed by sha256 (shared by all repos, like a CAS)."""

    def __init__(self, root: Path):
        self.objects = Path(root) / "objects"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lock = threading.Lock()
        self._counter = 0

    def object_path(self, sha256: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):  # it comes from the client: keep it a file name
            raise HubError(400, f"test hub: {sha256!r} is not a sha256")
        return self.objects / sha256

    def put(self, data: bytes, lfs: bool) -> Blob:
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.object_path(sha256)
        if not path.exists():
            tmp = path.with_suffix(f".tmp{threading.get_ident()}")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return Blob.for_lfs(sha256, len(data)) if lfs else Blob(len(data), sha256, _git_blob_id(data), False)

    def repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository not found: {repo_type} {repo_id}", code="RepoNotFound")
        return repo

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        repo = self.repos[(repo_type, repo_id)] = Repo(repo_type, repo_id, private, now())
        self.commit(
            repo, "main", {".gitattributes": self.put(GITATTRIBUTES.encode(), lfs=False)}, "initial commit"
        )
        return repo

    def commit(self, repo: Repo, branch: str, files: dict[str, Blob], title: str) -> str:
        self._counter += 1
        sha = hashlib.sha1(f"{repo.repo_id}\0{branch}\0{self._counter}\0{title}".encode()).hexdigest()
        repo.commits[sha] = Commit(files, title, now())
        repo.branches[branch] = sha
        return sha

    def is_lfs(self, files: dict[str, Blob], path: str, size: int, sample: bytes) -> bool:
        """Mirrors the Hub's preupload answer: big, binary, or matched by a .gitattributes LFS rule."""
        if size >= LFS_MIN_SIZE or b"\0" in sample:
            return True
        attributes = files.get(".gitattributes")
        text = self.object_path(attributes.sha256).read_text() if attributes else ""
        patterns = [line.split()[0] for line in text.splitlines() if "filter=lfs" in line]
        name = path.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatchcase(path if "/" in p else name, p) for p in patterns)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def card_fields(readme: str) -> dict:
    """`pipeline_tag`, `library_name` and `tags` from a README's front matter, as the Hub reports them.

    Only the simple `key: value` and `- item` forms the model card writer emits are understood.
    """
    match = re.match(r"---\n(.*?)\n---", readme, re.DOTALL)
    if match is None:
        return {}
    fields, current = {}, None
    for line in match[1].splitlines():
        if item := re.fullmatch(r"\s*-\s+(.+)", line):
            if current == "tags":
                fields.setdefault("tags", []).append(item[1].strip().strip("'\""))
        elif pair := re.fullmatch(r"([\w-]+):\s*(.*)", line):
            current = pair[1]
            if pair[1] in ("pipeline_tag", "library_name") and pair[2]:
                fields[pair[1]] = pair[2].strip().strip("'\"")
    return fields
