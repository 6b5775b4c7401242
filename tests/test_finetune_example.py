"""examples/finetune_new_corpus.py on real RAVDESS speech (skipped when ../shared is absent)."""

import importlib.util
from pathlib import Path

import pytest
import torch
from tiny_models import tiny_config, tiny_processor

from modeling_mer import MERForSequenceClassification

REPO = Path(__file__).resolve().parents[1]
RAVDESS_MANIFEST = REPO.parent / "shared" / "data" / "ravdess" / "manifest.csv"


def load_example():
    spec = importlib.util.spec_from_file_location("finetune_new_corpus", REPO / "examples" / "finetune_new_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained_model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trained")
    torch.manual_seed(0)
    MERForSequenceClassification(tiny_config()).save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    return folder


@pytest.mark.skipif(not RAVDESS_MANIFEST.exists(), reason="../shared/data/ravdess is not present")
@pytest.mark.parametrize("mapping,expected_labels", [
    (None, ["angry", "calm", "disgust", "fearful", "happy", "neutral", "sad", "surprised"]),
    ("neutral=neutral,calm=neutral,happy=happy,sad=sad,angry=angry,fearful=,disgust=,surprised=",
     ["neutral", "happy", "sad", "angry"]),
])
def test_finetune_on_ravdess_with_new_or_mapped_labels(trained_model_folder, tmp_path, mapping, expected_labels):
    argv = ["--model", str(trained_model_folder), "--manifest", str(RAVDESS_MANIFEST), "--output_dir",
            str(tmp_path), "--max_steps", "2", "--batch_size", "8", "--max_audio_seconds", "2"]
    metrics = load_example().main(argv + (["--label_mapping", mapping] if mapping else []))
    model = MERForSequenceClassification.from_pretrained(tmp_path / "model")
    assert list(model.config.id2label.values()) == expected_labels
    assert model.classifier[-1].out_features == len(expected_labels)
    assert 0.0 <= metrics["ua"] <= 1.0 and len(metrics["confusion_matrix"]) == len(expected_labels)
