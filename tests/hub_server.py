"""A loopback stand-in for the Hugging Face Hub HTTP API, so push/pull can be tested offline.

It answers the routes huggingface_hub 2.x calls for `create_repo`, `create_commit`/`upload_folder`
(preupload, git-LFS batch + PUT, NDJSON commit), `create_branch`, `repo_info`/`model_info`,
`list_repo_tree`, `hf_hub_download` and `snapshot_download`, which covers `push_to_hub` and
`from_pretrained(repo, trust_remote_code=True)` in transformers. Standard library only.

Xet is not spoken. With `hf_xet` installed, huggingface_hub uploads every "lfs" file through Xet
unless `HF_HUB_DISABLE_XET=1`; the fixture sets it (environment and in-process constant), so large
files take the legacy git-LFS "basic" route, which this server implements. Downloads never need Xet
here: the server sends no `X-Xet-Hash` header and no `xetHash` in trees. A client that still asks
for a Xet token gets a fast 501 (hf_xet's error shows the `xet-write-token` URL it was refused).

Use (the fixture is re-exported by tests/conftest.py; repos without a namespace go to `test-user`):

    def test_push_then_load(hub_endpoint, tmp_path):
        model.push_to_hub("test-user/tiny")  # in-process: env and huggingface_hub constants are patched
        env = {**os.environ, **hub_env(hub_endpoint, tmp_path / "fresh_home")}
        subprocess.run([sys.executable, "-c", LOAD_SCRIPT], env=env, timeout=300, check=True)

Set HUB_SERVER_VERBOSE=1 to log every request.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from hub_store import USER, Blob, HubError, HubStore, card_fields

_REPO = r"(?P<repo>[\w.-]+(?:/[\w.-]+)?)"
_API = r"/api/(?P<type>model|dataset|space)s/" + _REPO
_GIT = r"/(?:(?P<type>dataset|space)s/)?" + _REPO
# (method, path regex, handler name). Groups are still URL-quoted when matched.
ROUTES = [
    ("GET", r"/api/whoami-v2", "whoami"),
    ("GET", r"/api/agent-harnesses", "agent_harnesses"),
    ("POST", r"/api/repos/create", "create_repo"),
    ("DELETE", r"/api/repos/delete", "delete_repo"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),
    ("GET", _API + r"(?:/revision/(?P<rev>[^/]+))?", "repo_info"),
    ("POST", _API + r"/preupload/(?P<rev>[^/]+)", "preupload"),
    ("POST", _API + r"/commit/(?P<rev>[^/]+)", "commit"),
    ("GET", _API + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "tree"),
    ("POST", _API + r"/paths-info/(?P<rev>[^/]+)", "paths_info"),
    ("POST", _API + r"/branch/(?P<branch>[^/]+)", "create_branch"),
    ("GET", _API + r"/xet-(?:read|write)-token/.*", "xet_token"),
    ("POST", _GIT + r"\.git/info/lfs/objects/batch", "lfs_batch"),
    ("PUT", r"/lfs-objects/(?P<oid>[0-9a-f]{64})", "lfs_put"),
    ("POST", r"/lfs-objects/(?P<oid>[0-9a-f]{64})/verify", "lfs_verify"),
    ("HEAD", _GIT + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
    ("GET", _GIT + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
]
_ROUTES = [(method, re.compile(pattern), name) for method, pattern, name in ROUTES]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: huggingface_hub pools connections
    timeout = 30  # an idle keep-alive connection ends instead of pinning a thread past shutdown
    server: _HubHTTPServer

    def log_message(self, format, *args):  # noqa: A002 - quiet by default; failures carry messages
        if os.environ.get("HUB_SERVER_VERBOSE"):
            super().log_message(format, *args)

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # ---------------------------------------------------------------- plumbing

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.body = self._read_body()  # always drain it, or the next keep-alive request is garbage
        try:
            for route_method, pattern, name in _ROUTES:
                match = pattern.fullmatch(url.path)
                if route_method == method and match:
                    args = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    if "repo" in args:
                        args["repo_type"] = args.pop("type", None) or "model"
                    with self.server.store.lock:
                        getattr(self, "_" + name)(**args)
                    return
            raise HubError(404, f"test hub: no route for {method} {url.path}")
        except (KeyError, TypeError, ValueError) as error:  # a payload this server does not understand
            self._send_error(HubError(400, f"test hub: malformed request: {error!r}"))
        except HubError as error:
            self._send_error(error)
        except Exception as error:  # 501, not 500: huggingface_hub retries 5xx except 501, slowly
            self._send_error(HubError(501, f"test hub: internal error: {error!r}"))

    def _send_error(self, error: HubError) -> None:
        headers = {"X-Error-Message": error.message}
        if error.code:  # huggingface_hub maps these to RepositoryNotFoundError, EntryNotFoundError...
            headers["X-Error-Code"] = error.code
        if error.commit:
            headers["X-Repo-Commit"] = error.commit
        self._send_json({"error": error.message}, error.status, headers)

    def _read_body(self) -> bytes:
        # The LFS PUT streams a file object, which may arrive with chunked transfer encoding.
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(parts)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json_body(self) -> dict:
        try:
            return json.loads(self.body or b"{}")
        except json.JSONDecodeError as error:
            raise HubError(400, f"test hub: body is not JSON: {error}") from None

    def _send_json(self, obj, status: int = 200, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value.encode("ascii", "replace").decode())
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _require_token(self) -> None:
        # Any token is accepted; a write without one fails as on the real Hub.
        if not self.headers.get("Authorization"):
            raise HubError(401, "test hub: writes need a token (set HF_TOKEN or pass token=)")

    @property
    def _base(self) -> str:
        return self.server.endpoint

    # ---------------------------------------------------------------- account and repos

    def _whoami(self) -> None:
        self._require_token()
        self._send_json(
            {
                "type": "user",
                "id": "0",
                "name": USER,
                "fullname": "Test User",
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}},
            }
        )

    def _agent_harnesses(self) -> None:
        self._send_json({"standardEnvVars": [], "harnesses": {}})  # huggingface_hub's telemetry registry

    def _create_repo(self) -> None:
        self._require_token()
        body = self._json_body()
        repo_type = body.get("type") or "model"
        repo_id = f"{body.get('organization') or USER}/{body['name']}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self._base}/{prefix}{repo_id}"
        store = self.server.store
        if (repo_type, repo_id) in store.repos:  # create_repo(exist_ok=True) reads `url` from the 409
            self._send_json({"error": "You already created this repo", "url": url}, 409)
            return
        store.create_repo(
            repo_type, repo_id, body.get("visibility") == "private" or bool(body.get("private"))
        )
        self._send_json({"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self) -> None:
        self._require_token()
        body = self._json_body()
        key = (body.get("type") or "model", f"{body.get('organization') or USER}/{body['name']}")
        if self.server.store.repos.pop(key, None) is None:
            raise HubError(404, f"Repository not found: {key[1]}", code="RepoNotFound")
        self._send_json({})

    def _validate_yaml(self) -> None:
        # No YAML parser in the standard library: only check that the front matter is closed.
        content = self._json_body().get("content", "")
        if content.startswith("---") and not re.search(r"^---\s*$", content[3:], re.MULTILINE):
            self._send_json({"errors": [{"message": "metadata block is not closed by '---'"}]}, 400)
            return
        self._send_json({"errors": [], "warnings": []})

    def _repo_info(self, repo_type: str, repo: str, rev: str = "main") -> None:
        repo_obj = self.server.store.repo(repo_type, repo)
        sha = repo_obj.resolve(rev)
        commit = repo_obj.commits[sha]
        info = {
            "id": repo,
            "_id": sha[:24],
            "author": repo.split("/")[0],
            "sha": sha,
            "private": repo_obj.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "createdAt": repo_obj.created,
            "lastModified": commit.date,
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
        }
        readme = commit.files.get("README.md")
        if readme is not None:
            info.update(card_fields(self.server.store.object_path(readme.sha256).read_text(errors="replace")))
        self._send_json(info)

    def _create_branch(self, repo_type: str, repo: str, branch: str) -> None:
        self._require_token()
        repo_obj = self.server.store.repo(repo_type, repo)
        if branch in repo_obj.branches:
            raise HubError(409, f"Reference already exists: {branch}")
        repo_obj.branches[branch] = repo_obj.resolve(self._json_body().get("startingPoint") or "main")
        self._send_json({})

    def _xet_token(self, repo_type: str, repo: str) -> None:
        raise HubError(501, "test hub: Xet is not implemented; run the client with HF_HUB_DISABLE_XET=1")

    # ---------------------------------------------------------------- upload

    def _preupload(self, repo_type: str, repo: str, rev: str) -> None:
        self._require_token()
        store = self.server.store
        repo_obj = store.repo(repo_type, repo)
        files = repo_obj.commits[repo_obj.resolve(rev)].files
        answer = []
        for entry in self._json_body()["files"]:
            path, existing = entry["path"], files.get(entry["path"])
            lfs = store.is_lfs(files, path, entry["size"], base64.b64decode(entry["sample"]))
            # The client compares this oid with its own (sha256 for LFS, git sha1 otherwise) to skip
            # unchanged files, so it must use the same convention.
            oid = None if existing is None else (existing.sha256 if existing.lfs else existing.git_oid)
            answer.append(
                {"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
            )
        self._send_json({"files": answer, "commitOid": repo_obj.resolve(rev)})

    def _lfs_batch(self, repo_type: str, repo: str) -> None:
        self._require_token()
        self.server.store.repo(repo_type, repo)
        body = self._json_body()
        if body.get("operation") != "upload":
            raise HubError(400, "test hub: only LFS uploads go through the batch API")
        objects = []
        for obj in body["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if not self.server.store.object_path(obj["oid"]).exists():  # no "actions" = already stored
                href = f"{self._base}/lfs-objects/{obj['oid']}"
                entry["actions"] = {"upload": {"href": href}, "verify": {"href": href + "/verify"}}
            objects.append(entry)
        self._send_json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def _lfs_put(self, oid: str) -> None:
        if hashlib.sha256(self.body).hexdigest() != oid:
            raise HubError(400, f"test hub: uploaded bytes do not hash to {oid}")
        self.server.store.put(self.body, lfs=True)
        self._send_json({}, headers={"ETag": f'"{oid}"'})

    def _lfs_verify(self, oid: str) -> None:
        path = self.server.store.object_path(oid)
        if not path.exists() or path.stat().st_size != self._json_body().get("size"):
            raise HubError(404, f"test hub: LFS object {oid} missing or of the wrong size")
        self._send_json({})

    def _commit(self, repo_type: str, repo: str, rev: str) -> None:
        self._require_token()
        if self.query.get("create_pr"):
            raise HubError(400, "test hub: pull requests are not implemented")
        store = self.server.store
        repo_obj = store.repo(repo_type, repo)
        if rev not in repo_obj.branches:
            raise HubError(
                404, f"test hub: can only commit to an existing branch, not {rev}", code="RevisionNotFound"
            )
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "test hub: commit payload must start with a header line")
        header, parent = lines[0]["value"], repo_obj.branches[rev]
        if header.get("parentCommit") and not parent.startswith(header["parentCommit"]):
            raise HubError(412, f"test hub: {rev} is at {parent}, not {header['parentCommit']}")
        files = dict(repo_obj.commits[parent].files)
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            path = value["path"]
            if key == "file":
                files[path] = store.put(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                object_path = store.object_path(value["oid"])
                if not object_path.exists():
                    raise HubError(400, f"test hub: LFS object for {path} was never uploaded")
                files[path] = Blob.for_lfs(value["oid"], object_path.stat().st_size)
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubError(404, "A file with this name doesn't exist", code="EntryNotFound")
            elif key == "deletedFolder":
                folder = path.rstrip("/") + "/"
                files = {p: b for p, b in files.items() if not p.startswith(folder)}
            else:
                raise HubError(400, f"test hub: unsupported commit operation {key!r}")
        sha = store.commit(repo_obj, rev, files, header.get("summary", ""))
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        self._send_json(
            {"success": True, "commitOid": sha, "commitUrl": f"{self._base}/{prefix}{repo}/commit/{sha}"}
        )

    # ---------------------------------------------------------------- download

    def _tree_entry(self, path: str, blob: Blob | None) -> dict:
        if blob is None:
            return {
                "type": "directory",
                "oid": hashlib.sha1(path.encode()).hexdigest(),
                "size": 0,
                "path": path,
            }
        entry = {"type": "file", "oid": blob.git_oid, "size": blob.size, "path": path}
        if blob.lfs:
            entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": blob.pointer_size}
        return entry

    def _tree(self, repo_type: str, repo: str, rev: str, path: str = "") -> None:
        repo_obj = self.server.store.repo(repo_type, repo)
        files = repo_obj.commits[repo_obj.resolve(rev)].files
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        recursive = self.query.get("recursive", "").lower() in ("1", "true")
        entries: dict[str, Blob | None] = {}
        for file_path, blob in files.items():
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix) :].split("/")
            depth = len(parts) if recursive else 1
            for i in range(1, min(depth, len(parts) - 1) + 1):  # the folders on the way down
                entries.setdefault(prefix + "/".join(parts[:i]), None)
            if len(parts) <= depth:
                entries[file_path] = blob
        if prefix and not entries:
            raise HubError(404, f"test hub: no folder {path!r}", code="EntryNotFound")
        self._send_json([self._tree_entry(p, b) for p, b in sorted(entries.items())])

    def _paths_info(self, repo_type: str, repo: str, rev: str) -> None:
        repo_obj = self.server.store.repo(repo_type, repo)
        files = repo_obj.commits[repo_obj.resolve(rev)].files
        # get_paths_info posts form data (paths=a&paths=b); accept JSON too.
        body = self.body.decode()
        paths = json.loads(body)["paths"] if body.startswith("{") else parse_qs(body).get("paths", [])
        entries = []
        for path in paths:
            if path in files:
                entries.append(self._tree_entry(path, files[path]))
            elif any(p.startswith(path.rstrip("/") + "/") for p in files):
                entries.append(self._tree_entry(path, None))
        self._send_json(entries)

    def _resolve(self, repo_type: str, repo: str, rev: str, path: str) -> None:
        repo_obj = self.server.store.repo(repo_type, repo)
        sha = repo_obj.resolve(rev)
        blob = repo_obj.commits[sha].files.get(path)
        if blob is None:  # X-Repo-Commit lets the client cache the miss (.no_exist)
            raise HubError(404, f"Entry not found: {path}", code="EntryNotFound", commit=sha)
        headers = {"X-Repo-Commit": sha, "ETag": f'"{blob.git_oid}"', "Accept-Ranges": "bytes"}
        if blob.lfs:  # what the Hub sends for LFS files; the client prefers these over ETag/Content-Length
            headers.update({"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(blob.size)})
        start, end = 0, blob.size - 1
        status = 200
        range_match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if range_match and blob.size:
            start = int(range_match[1] or 0)
            end = min(int(range_match[2]), end) if range_match[2] else end
            if start > end:
                raise HubError(416, "test hub: range not satisfiable")
            status, headers["Content-Range"] = 206, f"bytes {start}-{end}/{blob.size}"
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1 if blob.size else 0))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command == "GET" and blob.size:
            with open(self.server.store.object_path(blob.sha256), "rb") as file:
                file.seek(start)
                remaining = end - start + 1
                while remaining and (chunk := file.read(min(remaining, 1 << 20))):
                    self.wfile.write(chunk)
                    remaining -= len(chunk)


class _HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    store: HubStore
    endpoint: str


class HubServer:
    """`with HubServer(tmp_dir) as hub:` serves on `hub.endpoint` (127.0.0.1, a free port) until exit."""

    def __init__(self, root: str | os.PathLike | None = None):
        self._tmp = None if root is not None else tempfile.TemporaryDirectory(prefix="hub-server-")
        self.root = Path(root if root is not None else self._tmp.name)
        self._httpd = _HubHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.store = self.store = HubStore(self.root)
        self._httpd.endpoint = self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)
        if self._tmp is not None:
            self._tmp.cleanup()


def hub_env(endpoint: str, hf_home: str | os.PathLike | None = None) -> dict[str, str]:
    """Environment variables that point a (fresh) huggingface_hub/transformers process at `endpoint`.

    Merge into a subprocess env: `subprocess.run(..., env={**os.environ, **hub_env(url, tmp)})`.
    """
    env = {
        "HF_ENDPOINT": endpoint,
        "HF_HUB_DISABLE_XET": "1",  # see the module docstring
        "HF_TOKEN": "test",
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_ETAG_TIMEOUT": "30",  # a loaded CI box can be slow to answer the HEAD calls
        "HF_HUB_DOWNLOAD_TIMEOUT": "60",
    }
    if hf_home is not None:
        env["HF_HOME"] = str(hf_home)
    return env


@pytest.fixture
def hub_endpoint(tmp_path_factory, monkeypatch):
    """A fresh test Hub for one test; yields its URL.

    The environment (inherited by subprocesses) and huggingface_hub's import-time constants are
    patched through `monkeypatch`, so everything is restored at teardown. The in-process cache goes
    to a temporary HF_HOME so a test never writes to the user's cache.
    """
    from huggingface_hub import constants

    root = tmp_path_factory.mktemp("hub")
    with HubServer(root / "server") as server:
        home = root / "hf_home"
        for name, value in hub_env(server.endpoint).items():
            monkeypatch.setenv(name, value)
        # huggingface_hub reads these when it is imported; a running process needs them patched.
        patches = {
            "ENDPOINT": server.endpoint,
            "HUGGINGFACE_CO_URL_TEMPLATE": server.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
            "HF_HUB_DISABLE_XET": True,
            "HF_HUB_OFFLINE": False,
            "HF_HOME": str(home),
            "HF_HUB_CACHE": str(home / "hub"),
            "HF_XET_CACHE": str(home / "xet"),
        }
        for name, value in patches.items():
            monkeypatch.setattr(constants, name, value)
        # transformers caches one HfApi, bound to the endpoint of its first use: drop it on both sides.
        if "transformers.utils.hub" in sys.modules:
            monkeypatch.setattr(sys.modules["transformers.utils.hub"], "_hf_api", None, raising=False)
        yield server.endpoint
        if "transformers.utils.hub" in sys.modules:  # imported during the test: not undone by monkeypatch
            sys.modules["transformers.utils.hub"]._hf_api = None
        shutil.rmtree(home, ignore_errors=True)
