import os
import subprocess
import sys
from pathlib import Path

import evaluate
import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    recall_score,
)

from modeling_mer.training.metrics import compute_emotion_metrics, load_emotion_metric

METRIC_PATH = Path(__file__).resolve().parent.parent / "modeling_mer" / "training" / "metrics.py"
LABEL_NAMES = ["neutral", "happy", "sad", "angry"]


def random_fold(seed, size=200, missing_class=None):
    rng = np.random.default_rng(seed)
    references = rng.integers(0, 4, size)
    # Predictions right about half the time, so the metrics are neither trivial nor at chance.
    predictions = np.where(rng.random(size) < 0.5, references, rng.integers(0, 4, size))
    if missing_class is not None:
        references = np.where(references == missing_class, (missing_class + 1) % 4, references)
    return predictions, references


def assert_matches_sklearn(metrics, predictions, references):
    assert metrics["wa"] == pytest.approx(accuracy_score(references, predictions))
    assert metrics["ua"] == pytest.approx(balanced_accuracy_score(references, predictions))
    assert metrics["macro_f1"] == pytest.approx(
        f1_score(references, predictions, average="macro", zero_division=0)
    )
    assert metrics["weighted_f1"] == pytest.approx(
        f1_score(references, predictions, average="weighted", zero_division=0)
    )
    recalls = recall_score(references, predictions, labels=range(4), average=None, zero_division=0)
    for index, name in enumerate(LABEL_NAMES):
        if index in references:
            assert metrics[f"recall_{name}"] == pytest.approx(recalls[index])
        else:
            assert metrics[f"recall_{name}"] is None
    np.testing.assert_array_equal(
        metrics["confusion_matrix"], confusion_matrix(references, predictions, labels=range(4))
    )


@pytest.mark.parametrize("seed", range(5))
def test_numpy_metrics_match_sklearn(seed):
    predictions, references = random_fold(seed)
    assert_matches_sklearn(
        compute_emotion_metrics(predictions, references, LABEL_NAMES), predictions, references
    )


@pytest.mark.filterwarnings("ignore::UserWarning")  # sklearn warns about the class missing from y_true
@pytest.mark.parametrize("missing_class", range(4))
def test_fold_with_a_missing_class(missing_class):
    predictions, references = random_fold(10 + missing_class, size=60, missing_class=missing_class)
    assert missing_class not in references and missing_class in predictions
    metrics = compute_emotion_metrics(predictions, references, LABEL_NAMES)
    assert_matches_sklearn(metrics, predictions, references)
    assert np.asarray(metrics["confusion_matrix"]).shape == (4, 4)


def test_class_set_comes_from_label_names_not_the_data():
    # Only classes 0 and 1 occur, but the fold belongs to a 4-class task: shape and keys stay 4-class.
    metrics = compute_emotion_metrics([0, 1, 1], [0, 1, 0], label_names=LABEL_NAMES)
    assert np.asarray(metrics["confusion_matrix"]).shape == (4, 4)
    assert metrics["recall_sad"] is None and metrics["recall_angry"] is None
    assert metrics["ua"] == pytest.approx((0.5 + 1.0) / 2)
    assert compute_emotion_metrics([0, 1], [0, 1], num_labels=3)["confusion_matrix"] == [
        [1, 0, 0],
        [0, 1, 0],
        [0, 0, 0],
    ]


@pytest.mark.parametrize(
    ("predictions", "references", "kwargs", "message"),
    [
        ([0, 4], [0, 1], {"label_names": LABEL_NAMES}, "outside 0..3"),
        ([0, 1], [0, -1], {"num_labels": 4}, "outside 0..3"),
        ([0, 1, 2], [0, 1], {}, "3 predictions but 2 references"),
        ([], [], {}, "empty"),
        ([0], [0], {"label_names": LABEL_NAMES, "num_labels": 3}, "num_labels=3"),
    ],
)
def test_bad_input_says_what_is_wrong(predictions, references, kwargs, message):
    with pytest.raises(ValueError, match=message):
        compute_emotion_metrics(predictions, references, **kwargs)


def test_evaluate_load_by_path_matches_numpy_and_accumulates_batches():
    metric = evaluate.load(str(METRIC_PATH))
    predictions, references = random_fold(42, missing_class=2)
    for start in range(0, len(predictions), 64):
        metric.add_batch(
            predictions=predictions[start : start + 64], references=references[start : start + 64]
        )
    loaded = metric.compute(label_names=LABEL_NAMES)
    assert loaded == compute_emotion_metrics(predictions, references, LABEL_NAMES)
    assert load_emotion_metric().compute(predictions=[1, 1], references=[1, 0], num_labels=2)["wa"] == 0.5


def test_evaluate_load_works_offline(tmp_path):
    # A fresh interpreter, so HF_HUB_OFFLINE is read at import time as it is for a user.
    script = (
        "import evaluate, sys\n"
        "metric = evaluate.load(sys.argv[1])\n"
        "result = metric.compute(predictions=[0, 1, 3, 3], references=[0, 1, 2, 3], "
        "label_names=['neutral', 'happy', 'sad', 'angry'])\n"
        "print(result['wa'], result['ua'])\n"
    )
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    completed = subprocess.run(
        [sys.executable, "-c", script, str(METRIC_PATH)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split()[-2:] == ["0.75", "0.75"]
