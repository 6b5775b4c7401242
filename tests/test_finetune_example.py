"""examples/finetune_new_corpus.py on real RAVDESS speech (skipped when ../shared is absent)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import tiny_config, tiny_processor

from modeling_mer import MERForSequenceClassification, MERProcessor
from modeling_mer.data.collator import MERDataCollator

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
    assert model.config.label_smoothing == 0.1  # the example's default, saved with the model
    assert model.classifier[-1].out_features == len(expected_labels)
    # The reported metrics must be those of the saved model on the held-out speakers: predict the test split
    # again from the saved folder, then recount the confusion matrix, WA and UA.
    example = load_example()
    corpus = (example.load_corpus(RAVDESS_MANIFEST) if mapping is None else
              example.load_corpus(RAVDESS_MANIFEST, label_names=expected_labels,
                                  label_mapping={raw: target or None for raw, target in
                                                 (pair.split("=") for pair in mapping.split(","))}))
    test_split = example.leave_speakers_out(corpus, n_folds=5)[0]["test"]
    collate = MERDataCollator(MERProcessor.from_pretrained(tmp_path / "model"), max_audio_seconds=2,
                              modalities=model.config.modalities)
    model.eval()
    logits = []
    with torch.no_grad():
        for start in range(0, len(test_split), 8):  # the Trainer's default eval batch size, same padding
            batch = collate([test_split[i] for i in range(start, min(start + 8, len(test_split)))])
            batch.pop("labels")
            logits.append(model(**batch).logits)
    logits = torch.cat(logits)
    predictions, references = logits.argmax(-1).numpy(), np.asarray(test_split["label"])
    reported = np.asarray(metrics["confusion_matrix"])
    # Rows are the test speakers' references: the metrics describe the test split, every utterance once.
    assert reported.sum(1).tolist() == np.bincount(references, minlength=len(expected_labels)).tolist()
    counts = np.zeros_like(reported)
    np.add.at(counts, (references, predictions), 1)
    # After 2 steps the logits are nearly tied; an example whose top two differ by < 1e-4 may flip under the
    # Trainer's float rounding and move one count out of one cell into another (2 cells change per flip).
    top_two = logits.topk(2, dim=-1).values
    near_ties = int((top_two[:, 0] - top_two[:, 1] < 1e-4).sum())
    assert np.abs(reported - counts).sum() <= 2 * near_ties, (reported, counts, near_ties)
    assert metrics["wa"] == pytest.approx(reported.trace() / reported.sum())
    present = reported.sum(1) > 0
    assert metrics["ua"] == pytest.approx((reported.diagonal()[present] / reported.sum(1)[present]).mean())


def test_a_malformed_augmentation_flag_fails_before_anything_loads(tmp_path):
    # The model folder and manifest do not exist: the flag must be refused before either is read.
    argv = ["--model", str(tmp_path / "absent"), "--manifest", str(tmp_path / "absent.csv"), "--output_dir",
            str(tmp_path / "out"), "--noise_snr_db", "30"]
    with pytest.raises(ValueError, match="--noise_snr_db '30' is not 'low,high'"):
        load_example().main(argv)
