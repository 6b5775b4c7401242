"""The examples run end to end against a tiny local model folder (and the loopback Hub for pushing)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download
from tiny_folders import save_tiny_model, write_wav

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")  # huggingface_hub's LFS PUT


def run_example(script, *args, tmp_path, offline=True):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "MPLBACKEND": "Agg"}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    completed = subprocess.run([sys.executable, str(EXAMPLES / script), *map(str, args)], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trained")
    save_tiny_model(folder)
    return folder


def _scores(line):
    return {pair.split()[0]: float(pair.split()[1]) for pair in line.split(":", 1)[1].split(",")}


@pytest.mark.parametrize("with_audio", [True, False], ids=["wav-file", "synthetic"])
def test_predict_example(model_folder, tmp_path, with_audio):
    audio_args = ["--audio", write_wav(tmp_path / "clip.wav", 12_000, sampling_rate=22_050)] if with_audio else []
    out = run_example("predict.py", "--model", model_folder, *audio_args, "--text", "why would you do that",
                      "--output", tmp_path / "focus.png", tmp_path=tmp_path)
    lines = {line.split(":")[0].strip(): line for line in out.splitlines() if ":" in line}
    pipeline_scores, plain_scores = _scores(lines["pipeline"]), _scores(lines["auto classes"])
    assert set(pipeline_scores) == {"neutral", "happy", "sad", "angry"}
    assert pipeline_scores == pytest.approx(plain_scores, abs=2e-3)  # printed with 3 decimals
    png = (tmp_path / "focus.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_push_to_hub_example(hub_endpoint, model_folder, tmp_path):
    (tmp_path / "results.md").write_text("| fold | WA | UA |\n|---|---|---|\n| 1 | 66.0 | 67.5 |\n")
    out = run_example("push_to_hub.py", model_folder, "test-user/mer-example",
                      "--base-model-text", "sentence-transformers/all-MiniLM-L6-v2",
                      "--base-model-audio", "facebook/wav2vec2-base", "--dataset-name", "IEMOCAP",
                      "--protocol", "Leave-one-session-out.", "--metrics-table", tmp_path / "results.md",
                      tmp_path=tmp_path, offline=False)
    assert "Pushed" in out and "test-user/mer-example" in out
    files = set(HfApi().list_repo_files("test-user/mer-example"))
    assert {"pipeline_mer.py", "processing_mer.py", "model.safetensors", "README.md"} <= files
    assert "| 1 | 66.0 | 67.5 |" in Path(hf_hub_download("test-user/mer-example", "README.md")).read_text()
