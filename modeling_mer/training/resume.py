"""Which checkpoint a fold resumes from, and which folds are already finished.

`--resume_from_checkpoint last` is the form for cross-validation: every fold looks in its own run folder,
continues from its latest *complete* checkpoint, starts fresh when it has none, and a fold that already
finished is not trained again (its saved model is reloaded and re-tested). An explicit checkpoint path can
only describe one run, so it is refused when several folds or ablation rows would share it. A fold folder
also records the settings it was trained with; resuming it under other settings (another learning rate,
encoder, corpus or split) is refused rather than mixing two experiments in one table.
"""

import json
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

LAST = ("last", "true")  # `true` is what users of Trainer's own boolean form type
FOLD_DONE = "fold_result.json"  # written after a fold's model is saved and tested
SETTINGS = "run_settings.json"  # written when a fold starts


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


def start_fold(run_dir: Path, settings: dict):
    """Record what this fold is trained with, and drop a result an earlier run left (it describes other weights)."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / SETTINGS).write_text(json.dumps(_as_json(settings), indent=2, sort_keys=True))
    (Path(run_dir) / FOLD_DONE).unlink(missing_ok=True)


def mark_fold_finished(run_dir: Path, metrics: dict):
    (Path(run_dir) / FOLD_DONE).write_text(json.dumps(metrics, indent=2))


def check_same_settings(value, run_dir: Path, settings: dict):
    """Under `last`, refuse to resume a fold that an earlier run trained with other settings."""
    path = Path(run_dir) / SETTINGS
    if not wants_last(value) or not path.is_file():
        return
    before, now = json.loads(path.read_text()), _as_json(settings)
    changed = {key: (before.get(key), now.get(key)) for key in sorted(set(before) | set(now))
               if before.get(key) != now.get(key)}
    if changed:
        shown = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in list(changed.items())[:6])
        raise ValueError(f"{run_dir} was trained with other settings ({shown}), so --resume_from_checkpoint last "
                         "would mix two experiments. Use a new --output_dir, or delete that folder to retrain it.")


def _as_json(settings: dict) -> dict:
    """Flat `{"training.learning_rate": ...}`, tuples as lists and enums as strings: as they come back from the file."""
    flat = {}
    for group, values in settings.items():
        for key, value in values.items():
            flat[f"{group}.{key}"] = value
    return json.loads(json.dumps(flat, sort_keys=True, default=str))


def _state_parses(checkpoint: Path) -> bool:
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
        return True
    except (OSError, ValueError):
        return False
