"""Emotion recognition metrics (WA, UA, macro/weighted F1, per-class recall, confusion matrix) as a
local `evaluate` module, so that evaluation works offline:

    import evaluate
    metric = evaluate.load("/path/to/modeling_mer/training/metrics.py")  # or load_emotion_metric()
    metric.compute(predictions=[0, 2, 1], references=[0, 1, 1], label_names=["neutral", "happy", "sad", "angry"])

Numpy only (no sklearn), so the module adds no dependency; tests/test_metrics.py checks it against
sklearn. `evaluate.load` copies this single file into its module cache, so it must not import other
project files.

Conventions when a class is absent from a fold (IEMOCAP sessions are unbalanced, and small folds miss
classes): `label_names` (or `num_labels`) fixes the class set, so the confusion matrix and per-class
keys have the same shape in every fold.
- UA averages recall over the classes present in the references (sklearn's balanced_accuracy_score):
  a class with no reference example has no recall, and counting it as 0 would punish the fold for
  its data rather than for the model.
- macro-F1 averages over the classes present in the references or the predictions (sklearn's
  f1_score default): a class that is only predicted is a real error and scores F1 = 0.
- weighted-F1 weights each class by its reference count; per-class recall of an absent class is None.
"""

from pathlib import Path

import datasets
import evaluate
import numpy as np

_DESCRIPTION = __doc__
_CITATION = ""
_INPUTS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class indices.
    references (list of int): true class indices.
    label_names (list of str, optional): class names in index order; fixes the number of classes.
    num_labels (int, optional): number of classes when no names are given (names become "0", "1", ...).
Returns:
    wa, ua, macro_f1, weighted_f1 (floats), recall_<name> (float, or None for a class absent from the
    references), confusion_matrix (rows = reference class, columns = predicted class).
"""


def resolve_label_names(predictions, references, label_names=None, num_labels=None):
    if label_names is not None:
        if num_labels is not None and num_labels != len(label_names):
            raise ValueError(f"num_labels={num_labels} but {len(label_names)} label_names were given")
        return [str(name) for name in label_names]
    if num_labels is None:
        # Without a declared class set, the largest index seen decides it: fine for one call,
        # inconsistent across folds, hence the label_names/num_labels arguments.
        num_labels = int(max(predictions.max(initial=-1), references.max(initial=-1))) + 1
    return [str(index) for index in range(num_labels)]


def confusion_matrix(predictions, references, num_labels):
    """(num_labels, num_labels) counts; row = reference class, column = predicted class."""
    flat = references * num_labels + predictions
    return np.bincount(flat, minlength=num_labels * num_labels).reshape(num_labels, num_labels)


def compute_emotion_metrics(predictions, references, label_names=None, num_labels=None):
    predictions = np.asarray(predictions, dtype=np.int64).reshape(-1)
    references = np.asarray(references, dtype=np.int64).reshape(-1)
    if predictions.shape != references.shape:
        raise ValueError(f"{predictions.size} predictions but {references.size} references")
    if references.size == 0:
        raise ValueError("no examples to score: predictions and references are empty")
    names = resolve_label_names(predictions, references, label_names, num_labels)
    for what, values in (("predictions", predictions), ("references", references)):
        outside = values[(values < 0) | (values >= len(names))]
        if outside.size:
            raise ValueError(
                f"{what} contain class indices {sorted(set(outside.tolist()))[:5]} "
                f"outside 0..{len(names) - 1} (label_names={names})"
            )

    counts = confusion_matrix(predictions, references, len(names))
    true_positives = np.diag(counts).astype(np.float64)
    reference_counts = counts.sum(axis=1)  # support of each class
    predicted_counts = counts.sum(axis=0)
    in_references = reference_counts > 0
    in_either = in_references | (predicted_counts > 0)

    recall = np.divide(
        true_positives, reference_counts, out=np.zeros_like(true_positives), where=in_references
    )
    # F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (predicted + reference); 0 for a class only predicted.
    f1_denominator = predicted_counts + reference_counts
    f1 = np.divide(2 * true_positives, f1_denominator, out=np.zeros_like(true_positives), where=in_either)

    metrics = {
        "wa": float(true_positives.sum() / references.size),
        "ua": float(recall[in_references].mean()),
        "macro_f1": float(f1[in_either].mean()),
        "weighted_f1": float((f1 * reference_counts).sum() / reference_counts.sum()),
    }
    for index, name in enumerate(names):
        metrics[f"recall_{name}"] = float(recall[index]) if in_references[index] else None
    metrics["confusion_matrix"] = counts.tolist()
    return metrics


class EmotionMetrics(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("int64"),
                    "references": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, predictions, references, label_names=None, num_labels=None):
        return compute_emotion_metrics(
            predictions, references, label_names=label_names, num_labels=num_labels
        )


def load_emotion_metric(**load_kwargs):
    """`evaluate.load` of this file by path: no Hub access needed."""
    return evaluate.load(str(Path(__file__).resolve()), **load_kwargs)
