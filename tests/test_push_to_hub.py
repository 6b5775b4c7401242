"""push_model_to_hub against the loopback Hub, then a fresh-process load through the normal download path."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hub_server import hub_env
from huggingface_hub import HfApi, hf_hub_download
from tiny_folders import save_tiny_model, waveform
from tiny_models import PROJECT_NOT_IMPORTABLE, tiny_processor

from modeling_mer.training.hub import push_model_to_hub

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")  # huggingface_hub's LFS PUT
REPO = "test-user/mer-tiny"
TEXTS = ["i am so happy today, it is wonderful", "no"]
CARD = dict(
    base_model_text="sentence-transformers/all-MiniLM-L6-v2",
    base_model_audio="facebook/wav2vec2-base",
    dataset_name="IEMOCAP",
    protocol="Leave-one-session-out, 5 folds.",
    metrics_table_markdown="| fold | WA | UA |\n|---|---|---|\n| 1 | 70.0 | 71.0 |",
)
SHIPPED = {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "README.md",
           "configuration_mer.py", "modeling_mer.py", "encoders_mer.py", "fusion_mer.py", "losses_mer.py",
           "spectral_mer.py", "processing_mer.py", "pipeline_mer.py", "audio_io_mer.py"}


@pytest.fixture
def trained_folder(tmp_path):
    """What a training run leaves behind: the model and processor, plus files that must not be pushed."""
    folder = tmp_path / "run"
    model = save_tiny_model(folder, seed=3)
    (folder / "checkpoint-10").mkdir()
    (folder / "checkpoint-10" / "optimizer.pt").write_bytes(b"not for the Hub")
    (folder / "trainer_state.json").write_text("{}")
    (folder / "training_args.bin").write_bytes(b"pickle")
    return folder, model


LOAD_SCRIPT = PROJECT_NOT_IMPORTABLE + textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    from transformers import AutoModelForSequenceClassification, AutoProcessor, pipeline

    repo, texts = sys.argv[1], json.loads(sys.argv[2])
    audio = list(np.load(sys.argv[3], allow_pickle=True))
    processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)
    model = AutoModelForSequenceClassification.from_pretrained(repo, trust_remote_code=True).eval()
    with torch.no_grad():
        logits = model(**processor(text=texts, audio=audio)).logits
    by_repo = pipeline(model=repo, trust_remote_code=True, device=-1)
    by_task = pipeline("multimodal-emotion-recognition", model=repo, trust_remote_code=True, device=-1)
    print(json.dumps({
        "logits": logits.tolist(),
        "modules": [type(x).__module__ for x in (processor, model, by_repo, by_task)],
        "by_repo": by_repo(audio, text=texts, batch_size=2),
        "by_task": by_task({"audio": audio[0], "text": texts[0]}),
    }))
""")


def test_push_then_load_through_the_download_path(hub_endpoint, trained_folder, tmp_path):
    folder, model = trained_folder
    commit_url = push_model_to_hub(folder, REPO, model_card_kwargs=CARD)
    assert REPO in commit_url

    files = set(HfApi().list_repo_files(REPO))
    assert SHIPPED <= files, SHIPPED - files
    assert not {name for name in files if "checkpoint" in name or name.startswith(("trainer_", "training_"))}
    config = json.loads(open(hf_hub_download(REPO, "config.json")).read())
    assert "multimodal-emotion-recognition" in config["custom_pipelines"]
    assert config["auto_map"]["AutoProcessor"] == "processing_mer.MERProcessor"
    card = open(hf_hub_download(REPO, "README.md")).read()
    assert "# mer-tiny" in card and "kim2023focus" in card and "| 1 | 70.0 | 71.0 |" in card
    assert "`neutral`, `happy`, `sad`, `angry`" in card and "librosa" not in card

    audio = [waveform(8000, seed=1), waveform(3000, seed=2)]
    env = {**os.environ, **hub_env(hub_endpoint, tmp_path / "fresh_home"), "PYTHONPATH": ""}
    script = tmp_path / "load.py"
    script.write_text(LOAD_SCRIPT)
    np.save(tmp_path / "audio.npy", np.array(audio, dtype=object), allow_pickle=True)
    completed = subprocess.run(
        [sys.executable, str(script), REPO, json.dumps(TEXTS), str(tmp_path / "audio.npy")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert all(module.startswith("transformers_modules") for module in result["modules"]), result["modules"]

    with torch.no_grad():
        expected = model(**tiny_processor()(text=TEXTS, audio=audio)).logits
    torch.testing.assert_close(torch.tensor(result["logits"]), expected, atol=1e-6, rtol=0)
    probabilities = expected.softmax(-1)
    for index, scores in enumerate(result["by_repo"]):
        got = {entry["label"]: entry["score"] for entry in scores}
        np.testing.assert_allclose([got[model.config.id2label[c]] for c in range(4)], probabilities[index], atol=1e-5)
    assert [e["label"] for e in result["by_task"]] == [e["label"] for e in result["by_repo"][0]]
    np.testing.assert_allclose([e["score"] for e in result["by_task"]], [e["score"] for e in result["by_repo"][0]],
                               atol=1e-6)


def test_push_again_updates_the_repo(hub_endpoint, trained_folder):
    folder, _ = trained_folder
    push_model_to_hub(folder, REPO, model_card_kwargs=CARD)
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# my own card\n")
    push_model_to_hub(folder, REPO)  # no card fields: the folder's README.md goes up
    assert "# my own card" in open(hf_hub_download(REPO, "README.md", force_download=True)).read()


def test_push_a_model_object(hub_endpoint, trained_folder):
    _, model = trained_folder
    with pytest.raises(ValueError, match="needs its processor"):
        push_model_to_hub(model, REPO, model_card_kwargs=CARD)
    push_model_to_hub(model, REPO, processor=tiny_processor(), model_card_kwargs=CARD, private=True)
    assert "pipeline_mer.py" in HfApi().list_repo_files(REPO)


def test_missing_card_or_folder_is_a_clear_error(hub_endpoint, trained_folder, tmp_path):
    folder, _ = trained_folder
    with pytest.raises(ValueError, match="No model card"):
        push_model_to_hub(folder, REPO)
    with pytest.raises(ValueError, match=r"lacks \['protocol'\]"):
        push_model_to_hub(folder, REPO, model_card_kwargs={k: v for k, v in CARD.items() if k != "protocol"})
    with pytest.raises(FileNotFoundError, match="no config.json"):
        push_model_to_hub(tmp_path / "nothing", REPO, model_card_kwargs=CARD)


def test_push_space_publishes_the_app_pointing_at_the_model(hub_endpoint, tmp_path):
    from modeling_mer.training.hub import SPACE_FOLDER, push_space

    push_space("test-user/mer-space", "test-user/mer-tiny")
    files = set(HfApi().list_repo_files("test-user/mer-space", repo_type="space"))
    assert files - {".gitattributes"} == {"app.py", "requirements.txt", "README.md", "model_id.txt"}
    model_id = hf_hub_download("test-user/mer-space", "model_id.txt", repo_type="space", cache_dir=tmp_path)
    assert open(model_id).read().strip() == "test-user/mer-tiny"
    app = hf_hub_download("test-user/mer-space", "app.py", repo_type="space", cache_dir=tmp_path)
    assert open(app).read() == (SPACE_FOLDER / "app.py").read_text()
    with pytest.raises(FileNotFoundError, match="no app.py"):
        push_space("test-user/other", "m", space_folder=tmp_path)
