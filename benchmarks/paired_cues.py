"""Real voices x real words: does a fused model use the emotion wherever it sits, in the voice, the words or both?

    python benchmarks/paired_cues.py                              # every row, 4 folds (~4-5 h on 2 CPU cores)
    python benchmarks/paired_cues.py --folds 0 1 --rows mer_text_only mer_audio_only late_fusion classic
        mer_fused_branch_heads_modality_dropout_0_3   # the README's table, folds 0-1 (25 min; run --folds 2 3 beside it)
    python benchmarks/paired_cues.py --rows classic               # the classic rows and probes (~1 min)
    python benchmarks/paired_cues.py --folds 0 --epochs 1         # smoke run (~5 min)
    python benchmarks/paired_cues.py --rows mer_text_only --work_dir runs/paired   # keep the models and logits
    python benchmarks/paired_cues.py --rows mer --mer-flags="--audio_model /models/wav2vec2-base"   # another encoder
    python benchmarks/paired_cues.py --rows mer_fused_full_model --folds 0     # one row, one fold (~8 min)

No corpus with both emotional speech and emotional transcripts can be had offline, so one is paired at run
time from two real ones (in a temporary folder; nothing is copied into the project): RAVDESS's acted voices
and MELD's dialogue lines, in 4 classes: neutral (a RAVDESS neutral or calm clip; a MELD neutral line), happy
(MELD joy), sad (sadness), angry (anger). Each item is one clip and one line in one of four cue conditions:

    condition    voice          line       label
    voice-only   emotion e      neutral    e
    words-only   neutral/calm   emotion e  e
    both         emotion e      emotion e  e
    neutral      neutral/calm   neutral    neutral

The ceiling. Per emotion the three cue conditions are equally frequent. A perfect voice-only model gets the
voice-only, both and neutral items right and calls every words-only item neutral: recall 2/3 on each emotion
and 1 on neutral, so UA = (3 x 2/3 + 1) / 4 = 75 %; a perfect words-only model likewise. Only a model that
combines the two can go beyond 75 %; the table's first two rows are these oracles.

Counts, per actor (all 24 alike): 2 items per emotion and cue condition (18) and 6 neutral items, 24 in all,
so every class and every cue condition has 6 items per actor (576 in the corpus, 144 per test fold; with equal
classes accuracy equals UA, which is why the table shows UA only). That uses each actor's 12 neutral/calm
clips (4 neutral, 8 calm) exactly once, 6 words-only and 6 neutral, each half with the same neutral:calm mix,
and 4 of its 8 clips per emotion, one normal- and one strong-intensity clip each for voice-only and both; the
other 4 stay unused, since a clip may appear only once (3 items per emotion and condition would need 9
neutral/calm clips for words-only alone and leave 3 for the neutral class). Lines: MELD's train, dev and test
lines pooled, de-duplicated by normalised text (lower case, letters and digits), kept when every occurrence
carries one emotion and the line has at least MIN_WORDS words, drawn at random (seed 0); each line is used once.

Folds: the actors' 4 test groups of 6 of the RAVDESS rows in benchmarks/real_corpora.py (leave_speakers_out,
seed 0, folds named 0-3 as there). Fold k tests on group k, selects the best epoch on 2 actors of group k + 1
and trains on the other 16. Every line is used once, so no line of a fold's test part is in its training or
validation part: the folds are disjoint in actors and in lines. Each fold is a CSV manifest (absolute audio
paths; path, text, label, speaker, cue, split, duration) that mer trains on with `--cv none` (splits as given).

Rows, all on the same folds, mean +- std over folds, overall UA and accuracy per cue condition:
- mer (MER_ROWS): the demo recipe (examples/configs/demo.yaml: frozen MiniLM, small wav2vec2 from scratch,
  d_model 64, 2 crossmodal layers, 4 heads, lr 1e-3, batch 16, seed 0, noise augmentation), audio cropped to
  4 s, the prosody statistics for every row with audio; text only, audio only, fused and the fusion ablations. Each fold
  writes its test logits (test_predictions.npz), from which the per-cue accuracy is computed;
- late fusion of mer's text-only and audio-only models: the mean of their class probabilities, and the sum
  of their log-probabilities (computed from the saved test logits, so it runs those two rows);
- classic: TF-IDF + logistic regression, MFCC statistics + LR, eGeMAPS + LR (when `opensmile` imports),
  MFCC statistics + TF-IDF in one LR, and the MFCC block of that LR alone (its scaling makes its penalty much
  stronger than the plain MFCC row's, so this, not the plain row, is the part the concatenation adds to);
- probes: a penalised LR (sklearn's default strength, fixed in advance) on the fixed representations mer's
  sides start from: the frozen MiniLM's mean-pooled sentence vector, the clip statistics (mer's own prosody
  statistics and the MFCC statistics), both in one LR, and a stacking LR on the two probes' log-probabilities
  for actors they had not trained on. They show what a linear fusion of those inputs gets.
  Classic rows and probes are fitted on each fold's train + validation parts (they select nothing), class
  weights balanced, as in benchmarks/real_corpora.py.
"""

import argparse
import contextlib
import json
import logging
import re
import sys
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import torch
import yaml
from scipy.sparse import csr_matrix, hstack
from scipy.special import log_softmax, softmax
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import GroupKFold
from sklearn.preprocessing import StandardScaler
from transformers import AutoModel, AutoTokenizer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from real_corpora import (  # noqa: E402
    MELD_SPLITS,
    SHARED,
    classic_model,
    egemaps,
    mer_scores,
    mer_statistics,
    mfcc_statistics,
    opensmile_missing,
    seed_dir,
    summary,
)

from modeling_mer.audio_io_mer import load_audio  # noqa: E402
from modeling_mer.data import leave_speakers_out  # noqa: E402
from modeling_mer.training import experiment  # noqa: E402

# Every row that has audio also gets the utterance-level prosody statistics.
PROSODY = ["--use_prosody_statistics", "true"]
# The words are the weak side of the paired corpus (frozen MiniLM: 37.5 %): these rows fine-tune it, at the
# encoder learning rate of the MELD row of benchmarks/real_corpora.py.
FINE_TUNED_TEXT = ["--freeze_text_encoder", "false", "--encoder_learning_rate", "5e-5"]
BRANCH_HEADS = ["--auxiliary_loss_weight", "1", "--late_fusion", "true"]
# mer rows: {row name: extra train.py flags on top of the demo recipe}. A new lever is one more line.
MER_ROWS = {
    "mer text only": ["--modalities", "text"],
    "mer audio only": ["--modalities", "audio", *PROSODY],
    "mer fused (full model)": PROSODY,
    "mer fused, no focus attention": [*PROSODY, "--use_focus_attention", "false"],
    "mer fused, no triplet loss": [*PROSODY, "--triplet_weight", "0"],
    # The fusion levers of MERConfig (issue 13): per-branch heads trained on the label and added to the logits,
    # then also hiding one modality of 30 % of the training examples.
    "mer fused + branch heads (auxiliary loss, late fusion)": [*PROSODY, *BRANCH_HEADS],
    "mer fused + branch heads + modality dropout 0.3": [*PROSODY, *BRANCH_HEADS, "--modality_dropout", "0.3"],
    # Label smoothing, the regulariser that helped audio-only on RAVDESS and the demo (README).
    "mer audio only + label smoothing 0.1": ["--modalities", "audio", *PROSODY, "--label_smoothing", "0.1"],
    "mer fused + branch heads + modality dropout 0.3 + label smoothing 0.1": [
        *PROSODY, *BRANCH_HEADS, "--modality_dropout", "0.3", "--label_smoothing", "0.1"],
    # Without the demo recipe's noise augmentation (made for the demo's digitally silent synthetic speech).
    "mer audio only, no noise": ["--modalities", "audio", *PROSODY, "--noise_probability", "0"],
    "mer text only, MiniLM fine-tuned": ["--modalities", "text", *FINE_TUNED_TEXT],
    "mer fused + branch heads, MiniLM fine-tuned": [*PROSODY, *BRANCH_HEADS, *FINE_TUNED_TEXT],
}
UNIMODAL = ("mer text only", "mer audio only")  # what late fusion combines
DEMO_CONFIG = REPO / "examples" / "configs" / "demo.yaml"
MAX_AUDIO_SECONDS = 4

CLASSES = ("neutral", "happy", "sad", "angry")  # label ids in this order
EMOTIONS = CLASSES[1:]
RAVDESS_CLASSES = {"neutral": "neutral", "calm": "neutral", "happy": "happy", "sad": "sad", "angry": "angry"}
MELD_CLASSES = {"neutral": "neutral", "joy": "happy", "sadness": "sad", "anger": "angry"}
CUES = ("voice-only", "words-only", "both", "neutral")
MIN_WORDS = 3  # shorter lines ("Oh!", "Yeah.") hardly carry an emotion in their words
SEED = 0
FOLDS, VALIDATION_ACTORS = 4, 2
MANIFEST_COLUMNS = ["path", "text", "label", "speaker", "cue", "split", "duration"]


# ---------------------------------------------------------------------- the paired corpus

def normalise(line):
    """The text two MELD lines must share to count as the same line: lower case, letters and digits only."""
    return " ".join(re.sub(r"[^a-z0-9]+", " ", line.lower()).split())


def meld_lines():
    """{class: sorted lines}: MELD's lines of the four classes, de-duplicated, of one emotion, >= MIN_WORDS words."""
    frame = pd.concat([pd.read_csv(SHARED / "meld" / name) for name in MELD_SPLITS.values()], ignore_index=True)
    text = frame["Utterance"].str.replace("[\x92\u2019]", "'", regex=True).str.strip()
    frame = frame.assign(text=text, key=text.map(normalise))
    emotions_per_line = frame.groupby("key")["Emotion"].nunique()
    keep = (frame["key"].map(emotions_per_line) == 1) & (frame["key"].str.split().str.len() >= MIN_WORDS)
    frame = frame[keep & frame["Emotion"].isin(list(MELD_CLASSES))].drop_duplicates("key")
    return {MELD_CLASSES[emotion]: sorted(group["text"]) for emotion, group in frame.groupby("Emotion")}


def ravdess_clips():
    """RAVDESS's clips of the four classes, absolute paths, with `emotion` (calm is neutral) beside `label`."""
    frame = pd.read_csv(SHARED / "ravdess" / "manifest.csv")
    frame = frame[frame["label"].isin(list(RAVDESS_CLASSES))].copy()
    frame["path"] = [str(SHARED / "ravdess" / path) for path in frame["path"]]
    frame["emotion"] = frame["label"].map(RAVDESS_CLASSES)
    return frame


def deal(clips, hands, rng, by):
    """`clips` shuffled within each value of `by`, then dealt round-robin into `hands` lists, so every hand gets
    the same mix of those values (e.g. normal and strong intensity)."""
    ordered = []
    for value in sorted({clip[by] for clip in clips}):
        group = [clip for clip in clips if clip[by] == value]
        ordered += [group[index] for index in rng.permutation(len(group))]
    return [ordered[hand::hands] for hand in range(hands)]


def actor_items(clips, rng):
    """One actor's items as (clip, emotion of the line, label, cue): 2 per emotion and cue condition, 6 neutral."""
    actor = clips["speaker"].iloc[0]
    calm = clips[clips["emotion"] == "neutral"].to_dict("records")
    if len(calm) != 12 or any((clips["emotion"] == emotion).sum() != 8 for emotion in EMOTIONS):
        raise ValueError(f"{actor}: expected RAVDESS's 12 neutral/calm clips and 8 per emotion; the counts "
                         "per condition (and the 75 % ceiling) rest on them.")
    words_only_voices, neutral_voices = deal(calm, 2, rng, by="label")  # each 2 neutral + 4 calm
    # Which emotion's words-only items get which of those is drawn, so no emotion always gets two calm ones.
    order = rng.permutation(len(EMOTIONS))
    words_only = dict(zip([EMOTIONS[index] for index in order],
                          deal(words_only_voices, len(EMOTIONS), rng, by="label"), strict=True))
    items = [(clip, "neutral", "neutral", "neutral") for clip in neutral_voices]
    for emotion in EMOTIONS:
        voice_only, both, *_unused = deal(clips[clips["emotion"] == emotion].to_dict("records"), 4, rng,
                                          by="intensity")
        items += [(clip, "neutral", emotion, "voice-only") for clip in voice_only]
        items += [(clip, emotion, emotion, "words-only") for clip in words_only[emotion]]
        items += [(clip, emotion, emotion, "both") for clip in both]
    return items


def paired_corpus(seed=SEED):
    """The paired corpus as a frame (path, text, label, speaker, cue, duration): 24 items per actor, each clip
    and each line used once."""
    rng = np.random.default_rng(seed)
    lines = {name: [pool[index] for index in rng.permutation(len(pool))] for name, pool in meld_lines().items()}
    rows = []
    for actor, clips in ravdess_clips().groupby("speaker", sort=True):
        for clip, line_emotion, label, cue in actor_items(clips, rng):
            rows.append({"path": clip["path"], "text": lines[line_emotion].pop(), "label": label, "speaker": actor,
                         "cue": cue, "duration": clip["duration"]})
    return pd.DataFrame(rows)


def actor_folds(actors):
    """{fold: (test actors, validation actors)}: the test groups of real_corpora.py's RAVDESS rows (the same
    leave_speakers_out call on the same 24 actors); validation takes VALIDATION_ACTORS of the next group."""
    table = datasets.Dataset.from_dict({"speaker": sorted(set(actors)), "label": [0] * len(set(actors))})
    folds = leave_speakers_out(table, n_folds=FOLDS, n_validation_speakers=VALIDATION_ACTORS, seed=SEED)
    return {str(fold): (sorted(set(splits["test"]["speaker"])), sorted(set(splits["validation"]["speaker"])))
            for fold, splits in folds.items()}


def with_splits(corpus, test_actors, validation_actors):
    split = np.where(corpus["speaker"].isin(test_actors), "test",
                     np.where(corpus["speaker"].isin(validation_actors), "validation", "train"))
    return corpus.assign(split=split)[MANIFEST_COLUMNS]


def fold_manifests(corpus, folds, folder):
    """{fold: CSV manifest with the fold's split column}: what mer trains on with --cv none."""
    paths = {}
    for fold, (test_actors, validation_actors) in folds.items():
        paths[fold] = Path(folder) / f"paired_fold_{fold}.csv"
        with_splits(corpus, test_actors, validation_actors).to_csv(paths[fold], index=False)
    return paths


# ---------------------------------------------------------------------- scores

def cue_scores(truth, predicted, cues):
    """Overall UA and accuracy, and the accuracy within each cue condition."""
    truth, predicted, cues = np.asarray(truth), np.asarray(predicted), np.asarray(cues)
    scores = {"ua": balanced_accuracy_score(truth, predicted), "accuracy": float(np.mean(truth == predicted))}
    for cue in CUES:
        scores[cue] = float(np.mean(truth[cues == cue] == predicted[cues == cue]))
    return scores


def oracle(frame, modality):
    """A perfect single-modality model: the label where its modality carries the emotion, else neutral."""
    blind = "words-only" if modality == "voice" else "voice-only"  # the condition whose cue it cannot see
    return np.where(frame["cue"] == blind, "neutral", frame["label"])


ORACLES = {"ceiling: a perfect voice-only model": "voice", "ceiling: a perfect words-only model": "words"}


# ---------------------------------------------------------------------- mer

def demo_recipe(epochs):
    """examples/configs/demo.yaml as train.py flags, without its corpus, protocol, output folder and seed (the
    seed is mer_scores's to set)."""
    values = yaml.safe_load(DEMO_CONFIG.read_text())
    values = {key: value for key, value in values.items() if key not in ("corpus", "cv", "output_dir", "seed")}
    values["num_train_epochs"] = epochs
    return [item for key, value in values.items() for item in (f"--{key}", str(value))]


def mer_run_dir(work, row, fold):
    """Where a mer row trains on one fold; a kept `--work_dir` holds it."""
    return Path(work) / "mer" / slug(row) / f"fold_{fold}"


def mer_model_dir(output_dir):
    """The fold model (and its test_predictions.npz) that mer_logits's run leaves in output_dir."""
    return experiment.fold_dir(seed_dir(output_dir, SEED), "full model", "given")


def mer_logits(flags, manifest, output_dir, epochs, feature_cache):
    """Train mer on one fold manifest; its test logits in the manifest's test-row order."""
    data = ["--corpus", str(manifest), "--cv", "none", "--class_names", ",".join(CLASSES),
            "--max_audio_seconds", str(MAX_AUDIO_SECONDS), "--feature_cache_dir", str(feature_cache)]
    with contextlib.redirect_stdout(sys.stderr):  # the run's own tables and logs: stdout is for this table
        mer_scores([*data, *demo_recipe(epochs), *flags], output_dir, seeds=[SEED])
    saved = np.load(mer_model_dir(output_dir) / "test_predictions.npz")
    return saved["logits"], saved["label_ids"]


def mean_of_probabilities(text_logits, audio_logits):
    return (softmax(text_logits, -1) + softmax(audio_logits, -1)).argmax(-1)


def sum_of_log_probabilities(text_logits, audio_logits):
    return (log_softmax(text_logits, -1) + log_softmax(audio_logits, -1)).argmax(-1)


LATE_FUSION_ROWS = {"late fusion: mean of mer text/audio probabilities": mean_of_probabilities,
                    "late fusion: sum of mer text/audio log-probabilities": sum_of_log_probabilities}


# ---------------------------------------------------------------------- classic baselines

def per_clip(featurise):
    """clip paths -> {path: feature vector}, each clip decoded and featurised once for all folds."""
    return lambda paths: {path: featurise(load_audio(path)) for path in paths}


def minilm_embeddings(lines):
    """lines -> {line: the frozen MiniLM's mean-pooled embedding}, the sentence vector mer's text side reads."""
    path = experiment.resolve_text_model("minilm")
    tokenizer, encoder = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    vectors = {}
    with torch.no_grad():
        for start in range(0, len(lines), 64):
            batch = list(lines[start:start + 64])
            tokens = tokenizer(batch, padding=True, truncation=True, return_tensors="pt")
            mask = tokens["attention_mask"].unsqueeze(-1).float()
            pooled = (encoder(**tokens).last_hidden_state * mask).sum(1) / mask.sum(1)
            vectors.update(zip(batch, pooled.numpy(), strict=True))
    return vectors


def tfidf_lr(fit, test, features):
    return classic_model(text=True).fit(fit["text"], fit["label"]).predict(test["text"])


def acoustic_lr(name):
    def predict(fit, test, features):
        table = features[name]
        model = classic_model().fit(np.stack([table[path] for path in fit["path"]]), fit["label"])
        return model.predict(np.stack([table[path] for path in test["path"]]))
    return predict


def joint_lr(words=True, voice=True):
    """TF-IDF and standardised MFCC statistics side by side in one logistic regression (TF-IDF's settings), or
    either block alone under the same scaling and penalty.

    TF-IDF rows have unit L2 norm; the standardised statistics are divided by sqrt(their dimension) so their
    rows have about unit norm too, and neither block drowns the other under the one penalty. That scaling is
    also a stronger penalty: 81 statistics divided by 9 need 9 times the weights for the same fit, so under
    TF-IDF's C=4 they are penalised about 20 times as hard as in the plain MFCC row (C=1), which alone is worth
    points on this corpus. The voice block alone, scaled so, is the part the concatenation adds to."""
    def predict(fit, test, features):
        text_model = classic_model(text=True)
        vectorizer, classifier = text_model[0], text_model[-1]
        fitted, tested = [], []
        if words:
            fitted.append(vectorizer.fit_transform(fit["text"]))
            tested.append(vectorizer.transform(test["text"]))
        if voice:
            statistics = feature_blocks(fit, test, features, ["mfcc"])
            fitted.append(csr_matrix(statistics[0]))
            tested.append(csr_matrix(statistics[1]))
        return classifier.fit(hstack(fitted).tocsr(), fit["label"]).predict(hstack(tested).tocsr())
    return predict


# Linear probes: what a penalised linear model gets from the fixed representations mer's two sides start from,
# the frozen MiniLM's sentence vector and the clip statistics (mer's prosody statistics and the MFCC statistics).
WORDS, VOICE = ("minilm",), ("mer_statistics", "mfcc")


def feature_blocks(fit, test, features, names):
    """The named feature blocks side by side, each standardised on the fit part and divided by sqrt(its width),
    so every block's rows have about unit norm and none drowns another under the one penalty."""
    fitted, tested = [], []
    for name in names:
        column, table = FEATURISERS[name][0], features[name]
        block_fit, block_test = (np.stack([table[key] for key in part[column]]) for part in (fit, test))
        scaler, width = StandardScaler().fit(block_fit), np.sqrt(block_fit.shape[1])
        fitted.append(scaler.transform(block_fit) / width)
        tested.append(scaler.transform(block_test) / width)
    return np.hstack(fitted), np.hstack(tested)


PROBE_CLASSES = np.asarray(sorted(CLASSES))  # sklearn's order of a classifier's probability columns


def probe_log_probabilities(names, fit, test, features):
    fitted, tested = feature_blocks(fit, test, features, names)
    model = LogisticRegression(max_iter=5000, class_weight="balanced").fit(fitted, fit["label"])
    return model.predict_log_proba(tested)


def probe_lr(*names):
    def predict(fit, test, features):
        return PROBE_CLASSES[probe_log_probabilities(names, fit, test, features).argmax(-1)]
    return predict


def stacking_inputs(words, voice, products=False):
    """Two models' (N, C) log-probabilities side by side, and with `products` every p_words(i) * p_voice(j) too:
    what a stacking LR reads. The products let it weigh one side by what the other says."""
    columns = [words, voice]
    if products:
        columns.append((np.exp(words)[:, :, None] * np.exp(voice)[:, None, :]).reshape(len(words), -1))
    return np.hstack(columns)


def stacked_probes(products=False, inner_folds=6):
    """One LR on the words probe's and the voice probe's log-probabilities, fitted on what each probe predicted
    for actors it had not trained on (6 folds of the fit part's actors); the probes then refit on all of it."""
    def predict(fit, test, features):
        held_out = {names: np.zeros((len(fit), len(CLASSES))) for names in (WORDS, VOICE)}
        for inner_fit, inner_test in GroupKFold(inner_folds).split(fit, groups=fit["speaker"]):
            for names, predictions in held_out.items():
                predictions[inner_test] = probe_log_probabilities(names, fit.iloc[inner_fit], fit.iloc[inner_test],
                                                                  features)
        tested = [probe_log_probabilities(names, fit, test, features) for names in (WORDS, VOICE)]
        stacker = LogisticRegression(max_iter=5000).fit(stacking_inputs(*held_out.values(), products), fit["label"])
        return stacker.predict(stacking_inputs(*tested, products))
    return predict


# {row name: (predict(fit frame, test frame, features), the features it needs)}
CLASSIC_ROWS = {
    "TF-IDF + LR": (tfidf_lr, ()),
    "MFCC statistics + LR": (acoustic_lr("mfcc"), ("mfcc",)),
    "eGeMAPS + LR": (acoustic_lr("egemaps"), ("egemaps",)),
    "MFCC statistics + TF-IDF, one LR": (joint_lr(), ("mfcc",)),
    "MFCC statistics + LR, scaled and penalised as in the one LR": (joint_lr(words=False), ("mfcc",)),
    "probe: frozen MiniLM sentence vector + LR": (probe_lr(*WORDS), WORDS),
    "probe: mer's prosody statistics + MFCC statistics + LR": (probe_lr(*VOICE), VOICE),
    "probe: both, one LR": (probe_lr(*WORDS, *VOICE), (*WORDS, *VOICE)),
    "probe: stacking, one LR on the two probes' held-out log-probabilities": (stacked_probes(), (*WORDS, *VOICE)),
    "probe: the same stacking, with the products p_words(i) p_voice(j)": (stacked_probes(products=True),
                                                                           (*WORDS, *VOICE)),
}
# {name: (the manifest column a feature vector belongs to, keys -> {key: vector})}
FEATURISERS = {"mfcc": ("path", per_clip(mfcc_statistics)), "egemaps": ("path", per_clip(egemaps)),
               "mer_statistics": ("path", per_clip(mer_statistics)), "minilm": ("text", minilm_embeddings)}


# ---------------------------------------------------------------------- the run

ROWS = [*ORACLES, *MER_ROWS, *LATE_FUSION_ROWS, *CLASSIC_ROWS]
GROUPS = {"mer": list(MER_ROWS), "late_fusion": list(LATE_FUSION_ROWS), "classic": list(CLASSIC_ROWS),
          "all": [*MER_ROWS, *LATE_FUSION_ROWS, *CLASSIC_ROWS]}


def slug(name):
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def chosen_rows(requested):
    """Row names, groups or slugs (`mer_text_only`) -> the rows to run, in table order, with what they need."""
    wanted = set()
    for item in requested:
        matches = GROUPS.get(item) or [row for row in ROWS if item in (row, slug(row))]
        if not matches:
            raise SystemExit(f"unknown row {item!r}: choose from {sorted(GROUPS)} or {[slug(row) for row in ROWS]}")
        wanted.update(matches)
    if wanted & set(LATE_FUSION_ROWS):
        wanted.update(UNIMODAL)  # late fusion reads their test logits
    if "eGeMAPS + LR" in wanted and opensmile_missing():
        print("skipped eGeMAPS + LR: the `opensmile` package does not import (`pip install opensmile`)")
        wanted.discard("eGeMAPS + LR")
    return [*ORACLES, *[row for row in ROWS if row in wanted and row not in ORACLES]]  # the ceilings always lead


def table_line(name, scores):
    cells = " | ".join(summary(scores, metric) for metric in ("ua", *CUES))
    return f"| {name} | {cells} | {len(scores)} |"


def run(args, work):
    corpus = paired_corpus()
    folds = {fold: groups for fold, groups in actor_folds(corpus["speaker"]).items()
             if not args.folds or fold in args.folds}
    manifests = fold_manifests(corpus, folds, work)
    tests = {fold: pd.read_csv(path).query("split == 'test'").reset_index(drop=True) for fold, path in manifests.items()}
    rows = chosen_rows(args.rows)
    needed = {name for row in rows if row in CLASSIC_ROWS for name in CLASSIC_ROWS[row][1]}
    features = {name: FEATURISERS[name][1](sorted(set(corpus[FEATURISERS[name][0]]))) for name in sorted(needed)}
    epochs = f", {args.epochs} mer epochs" if any(row in MER_ROWS for row in rows) else ""
    print(f"\n{len(corpus)} items, folds {list(folds)}{epochs}\n\n| model | overall UA | "
          + " | ".join(f"{cue} acc." for cue in CUES) + " | folds |\n|---|---|---|---|---|---|---|")
    table, logits = {}, {}
    for row in rows:
        start, table[row] = time.perf_counter(), {}
        for fold, test in tests.items():
            if row in ORACLES:
                predicted = oracle(test, ORACLES[row])
            elif row in MER_ROWS:
                flags = [*MER_ROWS[row], *args.mer_flags.split()]
                logits.setdefault(row, {})[fold], label_ids = mer_logits(
                    flags, manifests[fold], mer_run_dir(work, row, fold), args.epochs, work / "feature_cache")
                # The saved rows must be the manifest's test rows, in order: the label ids say so.
                if not np.array_equal(np.asarray(CLASSES)[label_ids], test["label"]):
                    raise RuntimeError(f"{row}, fold {fold}: test_predictions.npz is not in the manifest's row order")
                predicted = np.asarray(CLASSES)[logits[row][fold].argmax(-1)]
            elif row in LATE_FUSION_ROWS:
                combine = LATE_FUSION_ROWS[row]
                predicted = np.asarray(CLASSES)[combine(*(logits[name][fold] for name in UNIMODAL))]
            else:
                frame = pd.read_csv(manifests[fold])
                predicted = CLASSIC_ROWS[row][0](frame[frame["split"] != "test"], test, features)
            table[row][fold] = cue_scores(test["label"], predicted, test["cue"])
        print(table_line(row, table[row]), flush=True)
        print(f"{row}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return table


def new_work_dir(folder):
    """Create --work_dir, refusing one that holds anything: a kept run is never overwritten or mixed in."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise SystemExit(f"--work_dir {folder} is not an empty folder: name a new one, so no earlier run is "
                         "overwritten")
    folder.mkdir(parents=True, exist_ok=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=["all"],
                        help=f"row names, their slugs (mer_text_only) or groups {sorted(GROUPS)}; default all")
    parser.add_argument("--folds", nargs="+", choices=[str(fold) for fold in range(FOLDS)],
                        help="a subset of the folds (default all 4)")
    parser.add_argument("--epochs", type=int, default=8, help="mer training epochs (the demo recipe's 8)")
    parser.add_argument("--json", type=Path, help="also write the per-fold figures here")
    parser.add_argument("--mer-flags", default="",
                        help="extra train.py flags for every mer row, after the row's own, e.g. a pretrained speech "
                             "encoder from a local folder: --mer-flags='--audio_model /models/wav2vec2-base' (with '=')")
    parser.add_argument("--work_dir", type=Path,
                        help="keep the fold manifests and every mer run (models, test logits) here; a new or empty "
                             "folder (default: a temporary one, removed at the end)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.work_dir:
        new_work_dir(args.work_dir)
    if not SHARED.is_dir():
        print(f"skipped: {SHARED} is absent (the paired corpus is built from ../shared/data beside the repository)")
        return
    started = time.perf_counter()
    if args.work_dir:
        table = run(args, args.work_dir)
    else:
        with tempfile.TemporaryDirectory() as work:
            table = run(args, Path(work))
    print(f"\n(mean ± std over folds, in %; {time.perf_counter() - started:.0f} s in all)")
    if args.json:
        args.json.write_text(json.dumps(table, indent=1, default=float))


if __name__ == "__main__":
    main()
