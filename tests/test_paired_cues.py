"""benchmarks/paired_cues.py: the paired corpus's folds, its cue balance (the 75 % ceiling) and the per-cue scores.

The corpus tests build it from ../shared/data (RAVDESS, MELD) and skip without it; one trains mer for an epoch on a
few items, to check the plumbing from a fold manifest to its saved test logits."""

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import paired_cues  # noqa: E402

needs_data = pytest.mark.skipif(not (REPO.parent / "shared" / "data").is_dir(),
                                reason="the paired corpus is built from ../shared/data, absent here")


@pytest.fixture(scope="module")
def folds(tmp_path_factory):
    """{fold: manifest frame}, read back from the CSV manifests mer would train on."""
    corpus = paired_cues.paired_corpus()
    folder = tmp_path_factory.mktemp("paired")
    manifests = paired_cues.fold_manifests(corpus, paired_cues.actor_folds(corpus["speaker"]), folder)
    return {fold: pd.read_csv(path) for fold, path in manifests.items()}


@needs_data
def test_folds_are_disjoint_in_actors_and_in_lines(folds):
    assert list(folds) == ["0", "1", "2", "3"]
    test_actors = []
    for frame in folds.values():
        parts = {split: part for split, part in frame.groupby("split")}
        assert set(parts) == {"train", "validation", "test"}
        actors = {split: set(part["speaker"]) for split, part in parts.items()}
        assert len(actors["test"]) == 6 and len(actors["validation"]) == 2 and len(actors["train"]) == 16
        assert not actors["test"] & (actors["train"] | actors["validation"])
        assert not actors["validation"] & actors["train"]
        lines = {split: set(part["text"].map(paired_cues.normalise)) for split, part in parts.items()}
        assert not lines["test"] & (lines["train"] | lines["validation"])
        assert frame["path"].is_unique and all(Path(path).is_absolute() and Path(path).exists()
                                               for path in frame["path"])
        test_actors += sorted(actors["test"])
    assert len(set(test_actors)) == len(test_actors) == 24  # every actor is tested once


@needs_data
def test_each_line_is_used_once_and_labels_are_the_four_classes(folds):
    frame = folds["0"]
    assert len(frame) == 24 * 24 and frame["text"].map(paired_cues.normalise).is_unique
    assert set(frame["label"]) == set(paired_cues.CLASSES)
    assert list(frame.columns) == paired_cues.MANIFEST_COLUMNS
    # The other folds hold the same items, only split otherwise.
    for other in folds.values():
        pd.testing.assert_frame_equal(other.drop(columns="split"), frame.drop(columns="split"))


@needs_data
def test_cue_balance_puts_a_perfect_single_modality_at_75_percent_ua(folds):
    for frame in folds.values():
        test = frame[frame["split"] == "test"]
        counts = Counter(zip(test["cue"], test["label"], strict=True))
        # Per emotion the three cue conditions are equally frequent; the neutral items are neutral in both.
        for emotion in paired_cues.EMOTIONS:
            assert counts["voice-only", emotion] == counts["words-only", emotion] == counts["both", emotion] == 12
        assert counts["neutral", "neutral"] == 36 and sum(counts.values()) == 144
        for modality in ("voice", "words"):
            predicted = paired_cues.oracle(test, modality)
            assert balanced_accuracy_score(test["label"], predicted) == pytest.approx(0.75)
        # Only both modalities together can be right everywhere.
        both = np.where(paired_cues.oracle(test, "voice") != "neutral", paired_cues.oracle(test, "voice"),
                        paired_cues.oracle(test, "words"))
        assert balanced_accuracy_score(test["label"], both) == 1.0


@needs_data
def test_voices_match_their_condition(folds):
    """Emotional voices only where the voice carries the cue; neutral/calm voices elsewhere (RAVDESS's file names
    code the emotion: 01 neutral, 02 calm, 03 happy, 04 sad, 05 angry)."""
    codes = {"neutral": "01", "calm": "02", "happy": "03", "sad": "04", "angry": "05"}
    frame = folds["0"]
    voice = frame["path"].map(lambda path: Path(path).name.split("-")[2])
    emotional = frame["cue"].isin(["voice-only", "both"])
    assert (voice[emotional] == frame["label"][emotional].map(codes)).all()
    assert voice[~emotional].isin([codes["neutral"], codes["calm"]]).all()
    # Voice-only and both get the same intensities (the 4th field: 01 normal, 02 strong), one of each per actor.
    intensity = frame["path"].map(lambda path: Path(path).name.split("-")[3])
    counts = Counter(zip(frame["cue"][emotional], intensity[emotional], strict=True))
    assert set(counts.values()) == {24 * len(paired_cues.EMOTIONS)} and len(counts) == 4


def test_cue_scores_match_a_hand_computation():
    truth = ["happy", "happy", "sad", "neutral", "angry", "neutral"]
    predicted = ["happy", "neutral", "sad", "neutral", "sad", "happy"]
    cues = ["voice-only", "words-only", "both", "neutral", "voice-only", "neutral"]
    scores = paired_cues.cue_scores(truth, predicted, cues)
    # Recall: happy 1/2, sad 1/1, neutral 1/2, angry 0/1 -> UA 0.5; 3 of 6 right.
    assert scores["ua"] == pytest.approx(0.5) and scores["accuracy"] == pytest.approx(0.5)
    assert scores["voice-only"] == pytest.approx(0.5)  # happy right, angry wrong
    assert scores["words-only"] == 0.0 and scores["both"] == 1.0 and scores["neutral"] == pytest.approx(0.5)


def test_late_fusion_combines_probabilities_and_log_probabilities():
    # Text is sure of class 0 (p 0.9) and audio, mildly, of class 1; the mean of probabilities follows text,
    # while the sum of log-probabilities punishes class 0's 1e-4 under audio.
    text = np.log([[0.9, 0.0999, 0.0001]])
    audio = np.log([[0.0001, 0.5, 0.4999]])
    assert paired_cues.mean_of_probabilities(text, audio).tolist() == [0]
    assert paired_cues.sum_of_log_probabilities(text, audio).tolist() == [1]
    audio = np.log([[0.3, 0.4, 0.3]])
    assert paired_cues.mean_of_probabilities(text, audio).tolist() == [0]
    assert paired_cues.sum_of_log_probabilities(text, audio).tolist() == [0]


def test_rows_are_chosen_by_name_slug_or_group():
    rows = paired_cues.chosen_rows(["mer_fused_full_model", "TF-IDF + LR"])
    assert rows == [*paired_cues.ORACLES, "mer fused (full model)", "TF-IDF + LR"]
    # Late fusion reads the two single-modality runs, so they run with it.
    assert set(paired_cues.UNIMODAL) <= set(paired_cues.chosen_rows(["late_fusion"]))
    # Asking for a ceiling by name does not print it twice.
    assert paired_cues.chosen_rows(["ceiling_a_perfect_voice_only_model"]) == list(paired_cues.ORACLES)
    with pytest.raises(SystemExit, match="unknown row"):
        paired_cues.chosen_rows(["nonsense"])


@needs_data
def test_a_mer_row_trains_on_a_fold_manifest_and_returns_its_test_logits_in_row_order(folds, tmp_path):
    # A few items per split and one epoch: this checks the plumbing from the manifest to the saved test logits
    # (the call into real_corpora's trainer and where it writes), not the accuracy.
    frame = folds["0"]
    small = pd.concat([part.groupby("label").head(2) for _, part in frame.groupby("split", sort=False)])
    manifest = tmp_path / "small_fold.csv"
    small.to_csv(manifest, index=False)
    logits, label_ids = paired_cues.mer_logits(paired_cues.MER_ROWS["mer audio only"], manifest, tmp_path / "run",
                                               epochs=1, feature_cache=tmp_path / "cache")
    test = small[small["split"] == "test"]
    assert logits.shape == (len(test), len(paired_cues.CLASSES)) and np.isfinite(logits).all()
    assert np.asarray(paired_cues.CLASSES)[label_ids].tolist() == test["label"].tolist()


def synthetic_paired_frames(rng, actors=12, per_cue=6):
    """Fit and test frames of a paired corpus whose clip and line features are the voice's and the line's
    emotion (one-hot) plus noise, keyed as the probes look them up: clips by path, lines by text."""
    rows, features = [], {"minilm": {}, "mer_statistics": {}, "mfcc": {}}
    classes = paired_cues.CLASSES
    for actor in range(actors):
        for label_id, label in enumerate(classes):
            cues = ["neutral"] * 3 if label == "neutral" else ["voice-only", "words-only", "both"]
            for cue in cues:
                for item in range(per_cue):
                    voice = label_id if cue in ("voice-only", "both") else 0
                    words = label_id if cue in ("words-only", "both") else 0
                    key = f"{actor}-{label}-{cue}-{item}"
                    features["minilm"][key] = 2.0 * np.eye(8)[words] + rng.normal(size=8)
                    for name in ("mer_statistics", "mfcc"):
                        features[name][key] = 2.0 * np.eye(6)[voice] + rng.normal(size=6)
                    rows.append({"path": key, "text": key, "label": label, "speaker": f"actor{actor}", "cue": cue})
    frame = pd.DataFrame(rows)
    test = frame["speaker"].isin(["actor0", "actor1", "actor2"])
    return frame[~test].reset_index(drop=True), frame[test].reset_index(drop=True), features


def test_probes_read_each_block_and_only_their_combination_passes_the_single_modality_ceiling():
    fit, test, features = synthetic_paired_frames(np.random.default_rng(0))
    ua = {}
    for row in [row for row in paired_cues.CLASSIC_ROWS if row.startswith("probe: ")]:
        predict, needed = paired_cues.CLASSIC_ROWS[row]
        assert set(needed) <= set(features)
        ua[row] = balanced_accuracy_score(test["label"], predict(fit, test, features))
    words, voice, *combinations = ua.values()
    # Each single block sees one cue (at most 75 %); the combinations (one LR, two stackings) see both.
    assert 0.5 < words <= 0.8 and 0.5 < voice <= 0.8
    assert len(combinations) == 3 and min(combinations) > max(words, voice) + 0.05


def test_work_dir_must_be_new_or_empty_so_no_kept_run_is_overwritten(tmp_path):
    paired_cues.new_work_dir(tmp_path / "runs" / "a")  # created, parents too
    assert (tmp_path / "runs" / "a").is_dir()
    paired_cues.new_work_dir(tmp_path / "runs" / "a")  # still empty: fine
    (tmp_path / "runs" / "a" / "paired_fold_0.csv").write_text("kept")
    with pytest.raises(SystemExit, match="not an empty folder"):
        paired_cues.new_work_dir(tmp_path / "runs" / "a")
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit, match="not an empty folder"):
        paired_cues.new_work_dir(tmp_path / "file")
    assert (tmp_path / "runs" / "a" / "paired_fold_0.csv").read_text() == "kept"
