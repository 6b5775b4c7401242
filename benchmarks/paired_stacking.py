"""Is fusion the bottleneck on the paired corpus, or are the parts? Combiners of mer's two single-modality models.

    python benchmarks/paired_cues.py --folds 0 1 --rows mer_text_only mer_audio_only --work_dir runs/paired_a
    python benchmarks/paired_cues.py --folds 2 3 --rows mer_text_only mer_audio_only --work_dir runs/paired_b
    python benchmarks/paired_stacking.py runs/paired_a runs/paired_b        # ~2 min

Reads the fold models that benchmarks/paired_cues.py kept with `--work_dir` (every fold of the text-only and
audio-only rows, across one or more such folders), computes each model's logits on its fold's train,
validation and test rows (evaluation crops, as in training's own evaluation; the test logits are checked
against the saved test_predictions.npz), and compares ways to combine the two models' outputs:

- the sum of their log-probabilities (the product of the two posteriors; paired_cues.py's late-fusion row);
- stacking: a logistic regression on both models' log-probabilities, fitted on predictions the models made
  on items they did not train on. Two such sets exist: the fold's own validation actors (48 items), and the
  other folds' test items (432; no item of this fold's test actors, nor their labels, is in them);
- the same regression fitted on the fold's train + validation items (predictions on items the models trained
  on: the combination a single training run would learn);
- in hindsight: the regression fitted on the test fold itself, an optimistic bound on what any linear
  combiner of these outputs can reach (without and with the products p_text(i) * p_audio(j) as features).

It also prints each model's accuracy on its train, validation and test rows: a model that fits its training
items no better than unseen ones is under-fitted, and no combiner can add what neither output carries.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.special import log_softmax
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent))
import paired_cues  # noqa: E402

from modeling_mer import MERForSequenceClassification, MERProcessor  # noqa: E402
from modeling_mer.data import load_corpus  # noqa: E402
from modeling_mer.data.collator import MERDataCollator  # noqa: E402

UNIMODAL = paired_cues.UNIMODAL  # (text-only row, audio-only row): what is combined
SPLITS = ("train", "validation", "test")
PENALTY = 0.1  # the regression's inverse L2 strength (sklearn's C): few items, so a strong penalty
HINDSIGHT_PENALTY = 10.0  # almost none: the bound may fit the test items as closely as a linear model can
BATCH = 16


def split_logits(model_dir, manifest):
    """{split: (logits, label ids)} of one saved fold model on its manifest's rows, in manifest order."""
    model = MERForSequenceClassification.from_pretrained(model_dir).eval()
    collate = MERDataCollator(MERProcessor.from_pretrained(model_dir), modalities=model.config.modalities,
                              max_audio_seconds=paired_cues.MAX_AUDIO_SECONDS)
    corpus = load_corpus(str(manifest), label_names=list(paired_cues.CLASSES), text_column="auto")
    outputs = {}
    for split in SPLITS:
        part = corpus.select([index for index, name in enumerate(corpus["split"]) if name == split])
        logits = []
        with torch.no_grad():
            for start in range(0, len(part), BATCH):
                batch = collate([part[index] for index in range(start, min(start + BATCH, len(part)))])
                batch.pop("labels")
                logits.append(model(**batch).logits.numpy())
        outputs[split] = (np.concatenate(logits), np.asarray(part["label"]))
    saved = np.load(model_dir / "test_predictions.npz")["logits"]
    if not np.allclose(saved, outputs["test"][0], atol=1e-4):
        raise RuntimeError(f"{model_dir}: recomputed test logits differ from test_predictions.npz")
    return outputs


def collect(work_dirs):
    """{fold: {"cues": test cues, row: {split: (logits, labels)}}} over the folders paired_cues.py kept."""
    folds = {}
    for work in work_dirs:
        for manifest in sorted(Path(work).glob("paired_fold_*.csv")):
            fold = manifest.stem.removeprefix("paired_fold_")
            frame = pd.read_csv(manifest)
            folds[fold] = {"cues": frame.loc[frame["split"] == "test", "cue"].to_numpy()}
            for row in UNIMODAL:
                model_dir = paired_cues.mer_model_dir(paired_cues.mer_run_dir(work, row, fold))
                if not (model_dir / "test_predictions.npz").is_file():
                    rows = " ".join(paired_cues.slug(name) for name in UNIMODAL)
                    raise SystemExit(f"{work}: no kept {row!r} model for fold {fold}; run paired_cues.py with "
                                     f"--rows {rows} --work_dir {work}")
                folds[fold][row] = split_logits(model_dir, manifest)
    if not folds:
        raise SystemExit(f"no paired_fold_*.csv in {work_dirs}: pass folders written by paired_cues.py --work_dir")
    return folds


def features(fold, split, products=False):
    """Both models' log-probabilities side by side (and, with products, every p_text(i) * p_audio(j))."""
    text, audio = (log_softmax(fold[row][split][0], -1) for row in UNIMODAL)
    return paired_cues.stacking_inputs(text, audio, products)


def labels(fold, split):
    return fold[UNIMODAL[0]][split][1]


def stacked(fit_sets, test_fold, products=False, penalty=PENALTY):
    """Predictions on test_fold's test items of a regression fitted on [(fold, split), ...]."""
    fitted = LogisticRegression(C=penalty, max_iter=5000).fit(
        np.vstack([features(fold, split, products) for fold, split in fit_sets]),
        np.concatenate([labels(fold, split) for fold, split in fit_sets]))
    return fitted.predict(features(test_fold, "test", products))


def combiners(folds):
    """{row name: {fold: predicted label ids on the fold's test items}}."""
    rows = {name: {} for name in (
        *UNIMODAL, "sum of log-probabilities", "stacking, fitted on the validation actors",
        "stacking, fitted on the other folds' test items", "stacking, fitted on train + validation",
        "in hindsight: fitted on the test items", "in hindsight, with products p_text(i) p_audio(j)")}
    for name, fold in folds.items():
        others = [(folds[other], "test") for other in folds if other != name]
        for row in UNIMODAL:
            rows[row][name] = fold[row]["test"][0].argmax(-1)
        rows["sum of log-probabilities"][name] = paired_cues.sum_of_log_probabilities(
            *(fold[row]["test"][0] for row in UNIMODAL))
        rows["stacking, fitted on the validation actors"][name] = stacked([(fold, "validation")], fold)
        if others:
            rows["stacking, fitted on the other folds' test items"][name] = stacked(others, fold)
        rows["stacking, fitted on train + validation"][name] = stacked([(fold, "train"), (fold, "validation")], fold)
        # Fitted and scored on the same items: a bound, not a model.
        rows["in hindsight: fitted on the test items"][name] = stacked([(fold, "test")], fold, penalty=HINDSIGHT_PENALTY)
        rows["in hindsight, with products p_text(i) p_audio(j)"][name] = stacked([(fold, "test")], fold, True, HINDSIGHT_PENALTY)
    return {name: predictions for name, predictions in rows.items() if predictions}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work_dirs", nargs="+", type=Path, help="folders written by paired_cues.py --work_dir")
    args = parser.parse_args()
    folds = collect(args.work_dirs)
    print(f"\nfolds {sorted(folds)}\n\n| model | train acc. | validation acc. |\n|---|---|---|")
    for row in UNIMODAL:
        fit = [100 * np.mean(fold[row][split][0].argmax(-1) == fold[row][split][1])
               for fold in folds.values() for split in ("train", "validation")]
        print(f"| {row} | {np.mean(fit[0::2]):.1f} | {np.mean(fit[1::2]):.1f} |")
    print("\n| combiner | overall UA | " + " | ".join(f"{cue} acc." for cue in paired_cues.CUES) + " | folds |\n"
          + "|---" * (len(paired_cues.CUES) + 3) + "|")
    for name, predictions in combiners(folds).items():
        scores = {fold: paired_cues.cue_scores(labels(folds[fold], "test"), predicted, folds[fold]["cues"])
                  for fold, predicted in predictions.items()}
        print(paired_cues.table_line(name, scores))

if __name__ == "__main__":
    main()
