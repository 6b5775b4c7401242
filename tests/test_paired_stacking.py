"""benchmarks/paired_stacking.py: stacking fits only on items it may see, and learns what the plain product misses.

Synthetic logits stand in for the kept fold models (what the script computes from them is checked against the
saved test logits when it runs); the functions under test only combine logits and labels."""

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import paired_stacking  # noqa: E402
from paired_cues import UNIMODAL  # noqa: E402

TEXT, AUDIO = UNIMODAL
CLASSES = 4


def synthetic_folds(seed=0, items=120):
    """4 folds whose audio logits point at the label and whose text logits are louder
    noise: the sum of log-probabilities follows the text, a fitted combiner learns to weigh it by nothing."""
    rng = np.random.default_rng(seed)
    folds = {}
    for fold in "0123":
        folds[fold] = {"cues": np.array(["both"] * items)}
        for row in UNIMODAL:
            folds[fold][row] = {}
        for split in ("train", "validation", "test"):
            labels = rng.integers(0, CLASSES, items)
            audio = 2.0 * np.eye(CLASSES)[labels] + 0.5 * rng.normal(size=(items, CLASSES))
            text = 6.0 * rng.normal(size=(items, CLASSES))
            folds[fold][AUDIO][split] = (audio, labels)
            folds[fold][TEXT][split] = (text, labels)
    return folds


def accuracy(folds, predictions):
    return np.mean([np.mean(predicted == folds[fold][AUDIO]["test"][1]) for fold, predicted in predictions.items()])


def test_stacking_learns_to_ignore_a_confident_but_useless_modality():
    folds = synthetic_folds()
    rows = paired_stacking.combiners(folds)
    audio_alone = accuracy(folds, rows[AUDIO])
    assert audio_alone > 0.9
    assert accuracy(folds, rows["sum of log-probabilities"]) < 0.6  # the loud text drowns the audio
    for row in ("stacking, fitted on the validation actors", "stacking, fitted on the other folds' test items",
                "stacking, fitted on train + validation"):
        assert accuracy(folds, rows[row]) > audio_alone - 0.05, row


def test_held_out_stacking_never_reads_the_test_folds_labels():
    folds = synthetic_folds()
    before = paired_stacking.combiners(folds)
    logits, labels = folds["0"][AUDIO]["test"]
    shuffled = np.random.default_rng(1).permutation(labels)
    for row in UNIMODAL:  # the same test items, their labels scrambled
        folds["0"][row]["test"] = (folds["0"][row]["test"][0], shuffled)
    after = paired_stacking.combiners(folds)
    for row in ("stacking, fitted on the validation actors", "stacking, fitted on the other folds' test items",
                "stacking, fitted on train + validation"):
        assert np.array_equal(before[row]["0"], after[row]["0"]), row
    # The bound is fitted on the test labels, so it must move with them: the check above can fail.
    assert not np.array_equal(before["in hindsight: fitted on the test items"]["0"],
                              after["in hindsight: fitted on the test items"]["0"])


def test_a_folder_without_the_kept_models_is_refused_with_the_command_that_makes_them(tmp_path):
    (tmp_path / "paired_fold_0.csv").write_text("path,text,label,speaker,cue,split,duration\n")
    with pytest.raises(SystemExit, match="--work_dir"):
        paired_stacking.collect([tmp_path])
    with pytest.raises(SystemExit, match="paired_cues.py --work_dir"):
        paired_stacking.collect([tmp_path / "empty"])
