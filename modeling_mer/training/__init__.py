"""Training side: arguments, the Trainer, the frozen-encoder cache, cross-validation, metrics, reports.

Never shipped in a checkpoint. The data flow: `experiment.run` loads a corpus (`..data`), makes folds,
builds a model per fold, trains it with `MERTrainer` (optionally on cached frozen-encoder states), and
writes metrics, plots, a model card and a Hub-ready folder.
"""

from .arguments import DataArguments, MERTrainingArguments, ModelArguments
from .metrics import compute_emotion_metrics, load_emotion_metric
from .trainer import MERTrainer

__all__ = [
    "DataArguments",
    "MERTrainer",
    "MERTrainingArguments",
    "ModelArguments",
    "compute_emotion_metrics",
    "load_emotion_metric",
]
