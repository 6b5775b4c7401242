"""The loopback Hub answers huggingface_hub the way the real one does: push in-process, pull in a fresh one."""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from hub_server import HubServer, hub_env
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError

# huggingface_hub's own LFS PUT passes a file object as `data=`, which httpx2 deprecates: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
REPO = "test-user/tiny"
BIG = 10 * 1024 * 1024 + 123  # over the Hub's 10 MB limit for regular files

# Runs in a fresh interpreter, so huggingface_hub reads HF_ENDPOINT at import like a user's process does.
PULL = """
import json, sys
from huggingface_hub import hf_hub_download, snapshot_download
repo = sys.argv[1]
print(json.dumps({
    "snapshot": snapshot_download(repo),
    "one_file": hf_hub_download(repo, "sub/notes.txt"),
}))
"""


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "to_push"
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"model_type": "tiny", "hidden_size": 4}))
    (root / "modeling_tiny.py").write_text("from .configuration_tiny import TinyConfig  # noqa\n")
    (root / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + os.urandom(64))
    (root / "big.dat").write_bytes(os.urandom(BIG))  # no LFS pattern: LFS by size alone
    (root / "sub" / "notes.txt").write_text("nested file\n")
    (root / "README.md").write_text(
        "---\npipeline_tag: audio-classification\nlibrary_name: transformers\n---\n# Tiny\n"
    )
    return root


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_upload_folder_then_download_in_fresh_process(hub_endpoint, folder, tmp_path):
    api = HfApi(endpoint=hub_endpoint, token="test")
    assert api.create_repo(REPO, exist_ok=True).repo_id == REPO
    commit = api.upload_folder(repo_id=REPO, folder_path=folder, commit_message="add files")

    tree = {f.path: f for f in api.list_repo_tree(REPO, recursive=True) if hasattr(f, "size")}
    assert tree["big.dat"].lfs is not None and tree["big.dat"].lfs.size == BIG
    assert tree["model.safetensors"].lfs is not None  # binary, and matched by *.safetensors
    assert tree["config.json"].lfs is None and tree["modeling_tiny.py"].lfs is None
    info = api.model_info(REPO)
    assert info.sha == commit.oid and info.pipeline_tag == "audio-classification"

    home = tmp_path / "fresh_home"
    env = {**os.environ, **hub_env(hub_endpoint, home)}
    result = subprocess.run(
        [sys.executable, "-c", PULL, REPO], env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    paths = json.loads(result.stdout.strip().splitlines()[-1])
    assert paths["snapshot"].startswith(str(home))
    pulled = _files(Path(paths["snapshot"]))
    assert pulled.pop(".gitattributes").startswith(b"*.7z filter=lfs")  # the Hub's first commit
    assert pulled == _files(folder)
    assert open(paths["one_file"], "rb").read() == b"nested file\n"


def test_second_identical_push_makes_no_commit(hub_endpoint, folder):
    # The client skips files whose oid the preupload answer reports unchanged: checks the oid convention.
    api = HfApi(endpoint=hub_endpoint, token="test")
    api.create_repo(REPO)
    first = api.upload_folder(repo_id=REPO, folder_path=folder)
    second = api.upload_folder(repo_id=REPO, folder_path=folder)
    assert second.oid == first.oid
    (folder / "config.json").write_text("{}")
    assert api.upload_folder(repo_id=REPO, folder_path=folder).oid != first.oid


def test_missing_file_and_revision(hub_endpoint, tmp_path):
    api = HfApi(endpoint=hub_endpoint, token="test")
    api.create_repo(REPO)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "nope.json", cache_dir=tmp_path)
    with pytest.raises(Exception, match="Revision Not Found"):
        api.model_info(REPO, revision="no-such-branch")


def test_range_request_resumes_a_download(hub_endpoint):
    # hf_hub_download resumes an interrupted download with `Range: bytes=N-`.
    api = HfApi(endpoint=hub_endpoint, token="test")
    api.create_repo(REPO)
    api.upload_file(path_or_fileobj=b"0123456789", path_in_repo="digits.txt", repo_id=REPO)
    request = urllib.request.Request(
        f"{hub_endpoint}/{REPO}/resolve/main/digits.txt", headers={"Range": "bytes=4-"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 206 and response.read() == b"456789"
        assert response.headers["Content-Range"] == "bytes 4-9/10"


def test_in_process_push_to_hub_through_transformers(hub_endpoint, tmp_path):
    # push_to_hub goes through transformers' cached HfApi and ModelCard.load (a 404 on README.md).
    from transformers import AutoConfig, BertConfig

    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2).push_to_hub("test-user/cfg")
    loaded = AutoConfig.from_pretrained("test-user/cfg", cache_dir=tmp_path)
    assert loaded.hidden_size == 8
    files = HfApi(endpoint=hub_endpoint).list_repo_files("test-user/cfg")
    assert {"config.json", "README.md"} <= set(files)


def test_writes_need_a_token_and_server_stops(tmp_path):
    with HubServer(tmp_path) as hub:
        request = urllib.request.Request(f"{hub.endpoint}/api/repos/create", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request, timeout=10)
        assert error.value.code == 401
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{hub.endpoint}/api/whoami-v2", timeout=5)


REMOTE_CODE = {
    "__init__.py": "",
    "configuration_toy.py": """
from transformers import PretrainedConfig


class ToyConfig(PretrainedConfig):
    model_type = "toy-remote"

    def __init__(self, size=3, **kwargs):
        self.size = size
        super().__init__(**kwargs)
""",
    "modeling_toy.py": """
import torch
from transformers import PreTrainedModel

from .configuration_toy import ToyConfig


class ToyModel(PreTrainedModel):
    config_class = ToyConfig

    def __init__(self, config):
        super().__init__(config)
        self.linear = torch.nn.Linear(config.size, config.size)
        self.post_init()

    def forward(self, x):
        return self.linear(x)
""",
}
PUSH_REMOTE_CODE = """
import sys
sys.path.insert(0, sys.argv[1])
from toy.configuration_toy import ToyConfig
from toy.modeling_toy import ToyModel
ToyConfig.register_for_auto_class()
ToyModel.register_for_auto_class("AutoModel")
model = ToyModel(ToyConfig())
model.push_to_hub(sys.argv[2])
print(float(model.linear.weight.sum()))
"""
LOAD_REMOTE_CODE = """
import sys
from transformers import AutoModel
model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
print(type(model).__name__, float(model.linear.weight.sum()))
"""


def test_remote_code_model_round_trip(hub_endpoint, tmp_path):
    # The path push_to_hub(custom model) -> from_pretrained(trust_remote_code=True) takes, in two processes.
    package = tmp_path / "src" / "toy"
    package.mkdir(parents=True)
    for name, text in REMOTE_CODE.items():
        (package / name).write_text(text)
    env = {**os.environ, **hub_env(hub_endpoint, tmp_path / "home_push")}
    run = dict(env=env, capture_output=True, text=True, timeout=300)
    pushed = subprocess.run(
        [sys.executable, "-c", PUSH_REMOTE_CODE, str(package.parent), "test-user/toy"], **run
    )
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    files = set(HfApi(endpoint=hub_endpoint).list_repo_files("test-user/toy"))
    assert {"config.json", "model.safetensors", "modeling_toy.py", "configuration_toy.py"} <= files

    run["env"] = {**os.environ, **hub_env(hub_endpoint, tmp_path / "home_load")}
    loaded = subprocess.run([sys.executable, "-c", LOAD_REMOTE_CODE, "test-user/toy"], **run)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.split()[-2:] == ["ToyModel", pushed.stdout.split()[-1]]
