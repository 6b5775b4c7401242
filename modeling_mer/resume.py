"""Which checkpoint a fold resumes from, and which folds are already finished.

`--resume_from_checkpoint last` is the form for cross-validation: every fold looks in its own run folder,
continues from its latest *complete* checkpoint, starts fresh when it has none, and a fold that already
finished is not trained again (its saved model is reloaded and re-tested). An explicit checkpoint path can
only describe one run, so it is refused when several folds or ablation rows would share it.
"""

import json
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

LAST = ("last", "true")  # `true` is what users of Trainer's own boolean form type
FOLD_DONE = "fold_result.json"  # written after a fold's model is saved and tested


def wants_last(value) -> bool:
    return value is not None and str(value).lower() in LAST


def check_resume_value(value, runs: int):
    """Fail before training when a single checkpoint path is given for several runs, or the path is wrong."""
    if value is None or wants_last(value):
        return
    if runs > 1:
        raise ValueError(f"--resume_from_checkpoint {value} names one checkpoint, but this command trains {runs} "
                         "runs (folds x ablation rows). Use --resume_from_checkpoint last: each fold then resumes "
                         "from its own latest checkpoint and finished folds are kept.")
    if not (Path(value) / "trainer_state.json").is_file():
        raise FileNotFoundError(f"--resume_from_checkpoint {value}: not a complete checkpoint (no "
                                "trainer_state.json there). Pass a checkpoint-N folder, or 'last'.")


def last_complete_checkpoint(run_dir: Path) -> str | None:
    """The highest-step checkpoint whose trainer_state.json parses (Trainer writes that file last; a run killed
    while saving leaves a checkpoint folder without it, which transformers' get_last_checkpoint would pick)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None
    steps = []
    for folder in run_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        suffix = folder.name.rsplit("-", 1)[-1]
        if suffix.isdigit() and _state_parses(folder):
            steps.append((int(suffix), folder))
    return str(max(steps)[1]) if steps else None


def checkpoint_for(value, run_dir: Path) -> str | None:
    """What `Trainer.train(resume_from_checkpoint=...)` gets for this fold."""
    if value is None:
        return None
    return last_complete_checkpoint(run_dir) if wants_last(value) else str(value)


def finished_fold(value, run_dir: Path) -> bool:
    return wants_last(value) and (Path(run_dir) / FOLD_DONE).is_file()


def mark_fold_finished(run_dir: Path, metrics: dict):
    (Path(run_dir) / FOLD_DONE).write_text(json.dumps(metrics, indent=2))


def _state_parses(checkpoint: Path) -> bool:
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
        return True
    except (OSError, ValueError):
        return False
