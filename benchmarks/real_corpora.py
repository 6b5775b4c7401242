"""mer against the classic baselines on real corpora, on the same folds, in one run.

    python benchmarks/real_corpora.py --rows meld ravdess ravdess_bimodal demo_audio   # all rows (about 5 h)
    python benchmarks/real_corpora.py --rows ravdess --folds 1                          # one row, one fold
    python benchmarks/real_corpora.py --rows ravdess --folds 2 --mer-flags="--label_smoothing 0.1"   # a lever
    python benchmarks/real_corpora.py --rows demo_audio --seeds 0 1 2 3 4         # mer rows over five seeds
    python benchmarks/real_corpora.py --rows ravdess --no-mer      # the classic and probe rows alone, no mer training

Data come from ../shared/data at run time (never copied into the project); every row skips with a message
when it is absent. Times measured on the 2-core CPU with two such runs side by side (one thread each): meld
8 min; ravdess and ravdess_bimodal 15-23 min per fold and per mer model (16 min in the latest four-fold run,
so `--folds` one fold stays near the 15-minute mark only on an idle machine); demo_audio 7 min. The classic
and probe rows of ravdess and demo_audio together (`--no-mer`), each clip featurised once: 8 min beside three
other jobs. Rows:

- meld: MELD transcripts, official train/dev/test splits, 7 classes. mer text-only (all-MiniLM-L6-v2
  fine-tuned) vs TF-IDF (word 1-2 grams) + logistic regression. Weighted F1 (MELD's metric) and UA.
- ravdess: RAVDESS speech, 8 classes, 4 actor-independent folds (6 actors each). mer audio-only (small
  wav2vec2 from scratch + prosody branch + prosody statistics) vs eGeMAPS functionals (openSMILE) + logistic regression and vs
  MFCC statistics + logistic regression. UA. Two probe rows, not baselines, say what mer's audio side is
  given: a logistic regression on mer's own prosody statistics (the vector `use_prosody_statistics` adds),
  and the same with the eGeMAPS functionals beside them in one logistic regression (what eGeMAPS knows that
  those statistics lack).
- ravdess_bimodal: the same folds with RAVDESS's two emotion-neutral sentences as text: mer fused, plain and
  with the fusion levers (branch heads + modality dropout), vs mer audio-only (an uninformative modality must
  not hurt). Three mer models per fold.
- demo_audio: the bundled demo corpus, session 5 held out: mer audio-only vs the linear probe on prosodic
  statistics of benchmarks/demo_corpus_ceiling.py.

The baselines are fitted on each fold's train + validation parts (they select nothing) and scored on its
test part; class weights are balanced for them as the class-balanced batches are for mer. Mean +- std over folds.
"""

import argparse
import functools
import io
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from transformers import Wav2Vec2Config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import datasets  # noqa: E402
from demo_corpus_ceiling import prosodic_features  # noqa: E402

from modeling_mer import MERConfig  # noqa: E402
from modeling_mer.audio_io_mer import load_audio  # noqa: E402
from modeling_mer.configuration_mer import SAMPLING_RATE  # noqa: E402
from modeling_mer.data import load_demo  # noqa: E402
from modeling_mer.data.collator import crop_waveform  # noqa: E402
from modeling_mer.encoders_mer import receptive_field  # noqa: E402
from modeling_mer.prosody_statistics_mer import ProsodyStatistics  # noqa: E402
from modeling_mer.spectral_mer import SpectralFeatures  # noqa: E402
from modeling_mer.training import experiment  # noqa: E402
from modeling_mer.training.arguments import DataArguments  # noqa: E402
from modeling_mer.training.experiment import SMALL_SPEECH_ENCODER  # noqa: E402
from train import parse_arguments  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
MELD_COLUMNS = {"Utterance": "text", "Emotion": "label", "Speaker": "speaker"}
MELD_SPLITS = {"train": "train_sent_emo.csv", "validation": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
MAX_AUDIO_SECONDS = 4  # the RAVDESS rows' crop (clips run 3-5 s)


# ---------------------------------------------------------------------- corpora

def meld_corpus(folder):
    """MELD's official splits as a saved DatasetDict (train.py then uses them as given with --cv none)."""
    import pandas as pd

    parts = {}
    for split, name in MELD_SPLITS.items():
        frame = pd.read_csv(SHARED / "meld" / name)[list(MELD_COLUMNS)].rename(columns=MELD_COLUMNS)
        frame["text"] = frame["text"].str.replace("\x92", "'").str.strip()
        parts[split] = datasets.Dataset.from_pandas(frame[frame["text"].str.len() > 0], preserve_index=False)
    names = sorted(set(parts["train"]["label"]))
    splits = datasets.DatasetDict({split: part.cast_column("label", datasets.ClassLabel(names=names))
                                   for split, part in parts.items()})
    splits.save_to_disk(folder)
    return folder


def ravdess_manifest(folder, with_text):
    """RAVDESS's own manifest, rewritten with absolute paths (and without the text column for audio only)."""
    import pandas as pd

    frame = pd.read_csv(SHARED / "ravdess" / "manifest.csv")
    frame["path"] = [str(SHARED / "ravdess" / path) for path in frame["path"]]
    columns = ["path", "label", "speaker", "duration"] + (["text"] if with_text else [])
    path = Path(folder) / ("ravdess_bimodal.csv" if with_text else "ravdess_audio.csv")
    frame[columns].to_csv(path, index=False)
    return path


# ---------------------------------------------------------------------- classic features

# 25 ms frames with a 10 ms hop, the usual framing of classic acoustic features.
CLASSIC_SPECTRA = SpectralFeatures(num_mel_bins=64, num_mfcc=40, window_length=400, hop_length=160)


def mfcc_statistics(waveform):
    """Mean and standard deviation of 40 MFCCs and log energy over 25 ms frames (10 ms hop)."""
    log_mel, mfcc = CLASSIC_SPECTRA(torch.from_numpy(waveform)[None])
    frames = torch.cat([mfcc[0], log_mel[0].logsumexp(-1, keepdim=True)], -1).numpy()
    return np.concatenate([frames.mean(0), frames.std(0)])


def opensmile_missing():
    """eGeMAPS rows need the benchmark-only `opensmile` package; without it they are skipped, with a message."""
    try:
        import opensmile  # noqa: F401
    except ImportError:
        return True
    return False


@functools.lru_cache(maxsize=1)
def _smile():
    import opensmile  # benchmark-only: `pip install opensmile`

    return opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals)


def egemaps(waveform):
    """The 88 eGeMAPS v02 functionals of openSMILE, the field's standard acoustic baseline."""
    return _smile().process_signal(waveform, SAMPLING_RATE).to_numpy()[0]


@functools.lru_cache(maxsize=1)
def _mer_statistics_module():
    """The prosody statistics of an audio-only mer model with the small speech encoder (they have no weights
    before their standardisation, so an untrained module computes exactly what a trained one is given)."""
    audio_config = Wav2Vec2Config(**SMALL_SPEECH_ENCODER)
    config = MERConfig(modalities=("audio",), audio_config=audio_config, use_prosody_statistics=True)
    return ProsodyStatistics(config, receptive_field(audio_config), audio_config.inputs_to_logits_ratio).eval()


def mer_statistics(waveform, max_seconds=MAX_AUDIO_SECONDS):
    """mer's own prosody statistics of the clip as the model sees it in evaluation (the centre window)."""
    module = _mer_statistics_module()
    samples = torch.from_numpy(crop_waveform(waveform, int(max_seconds * SAMPLING_RATE), False, None))[None]
    frames = int(module.spectral.num_frames(torch.tensor(samples.shape[1])))  # the encoder's frame count
    with torch.no_grad():
        return module.statistics(samples, torch.ones(1, frames, dtype=torch.bool))[0].numpy()


def acoustic(featurise):
    """dataset -> (N, F) features of its clips. A clip stored as a file is featurised once for all folds (each
    fold refits on three quarters of the same clips; eGeMAPS costs about 0.1 s a clip)."""
    by_path = {}

    def clip(audio, index):
        path = audio.get("path") if isinstance(audio, dict) and audio.get("bytes") is None else None
        if path is None:
            return featurise(load_audio(audio, name=str(index)))
        if path not in by_path:
            by_path[path] = featurise(load_audio(audio, name=path))
        return by_path[path]

    def features(dataset):
        return np.stack([clip(audio, index) for index, audio in enumerate(dataset["audio"])])
    return features


def demo_prosody(dataset):
    rows = [sf.read(io.BytesIO(audio["bytes"]), dtype="float32") for audio in dataset["audio"]]
    return np.stack([prosodic_features(waveform, rate) for waveform, rate in rows])


def classic_model(text=False):
    """The classic baselines' classifier: TF-IDF (word 1-2 grams) + logistic regression on transcripts, or
    standardised features + logistic regression; class weights balanced."""
    if text:
        return make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
                             LogisticRegression(max_iter=3000, class_weight="balanced", C=4.0))
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, class_weight="balanced"))


def score_baseline(folds, features, text=False):
    """Fit on each fold's train + validation, score its test part: {fold: {ua, weighted_f1}}."""
    scores = {}
    for fold, splits in folds.items():
        fit = datasets.concatenate_datasets([splits["train"], splits["validation"]])
        model = classic_model(text)
        if text:
            model.fit(fit["text"], fit["label"])
            predicted = model.predict(splits["test"]["text"])
        else:
            model.fit(features(fit), fit["label"])
            predicted = model.predict(features(splits["test"]))
        truth = splits["test"]["label"]
        scores[fold] = {"ua": balanced_accuracy_score(truth, predicted),
                        "weighted_f1": f1_score(truth, predicted, average="weighted")}
    return scores


# ---------------------------------------------------------------------- mer

def seed_dir(output_dir, seed):
    """Where mer_scores puts one seed's run (its folds' folders below it)."""
    return output_dir / f"seed{seed}"


def mer_scores(flags, output_dir, seeds):
    """Train once per seed and fold: {fold or (fold, seed): {ua, weighted_f1}}."""
    scores = {}
    for seed in seeds:
        model_args, data_args, training_args = parse_arguments([
            *flags, "--seed", str(seed), "--output_dir", str(seed_dir(output_dir, seed)),
            "--disable_tqdm", "true", "--report_to", "none"])
        results, _ = experiment.run(model_args, data_args, training_args)
        for fold, metrics in results["full model"].items():
            key = fold if len(seeds) == 1 else f"{fold}, seed {seed}"
            scores[key] = {"ua": metrics["ua"], "weighted_f1": metrics["weighted_f1"]}
    return scores


def folds_of(flags):
    _, data_args, _ = parse_arguments(flags)
    dataset, _ = experiment.load_data(data_args)
    return experiment.make_folds(dataset, data_args)


def summary(scores, metric):
    values = [fold[metric] for fold in scores.values()]
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}"


def run_row(row, args, work):
    recipe = ["--num_train_epochs", str(args.epochs), "--learning_rate", "1e-3", *args.mer_flags.split()]
    folds = ["--folds", args.folds] if args.folds else []
    if row == "meld":
        corpus = meld_corpus(work / "meld")
        data = ["--corpus", str(corpus), "--cv", "none"]
        rows = {} if args.no_mer else {"mer text (MiniLM fine-tuned)": mer_scores(
            [*data, "--num_train_epochs", str(args.meld_epochs), "--learning_rate", "1e-3", "--modalities", "text",
             "--text_model", "minilm", "--freeze_text_encoder", "false", "--encoder_learning_rate", "5e-5",
             "--per_device_train_batch_size", "32"], work / "meld_run", args.seeds)}
        return {**rows, "TF-IDF + logistic regression": score_baseline(folds_of(data), None, text=True)}
    if row in ("ravdess", "ravdess_bimodal"):
        data = ["--corpus", str(ravdess_manifest(work, with_text=row == "ravdess_bimodal")), "--cv", "speakers",
                "--num_speaker_folds", "4", "--max_audio_seconds", str(MAX_AUDIO_SECONDS), *folds]
        audio = [*data, *recipe, "--modalities", "audio", "--use_prosody_statistics", "true"]
        rows = {} if args.no_mer else {"mer audio only": mer_scores(audio, work / f"{row}_audio", args.seeds)}
        if row == "ravdess":
            folds = folds_of(data)
            if opensmile_missing():
                print("eGeMAPS rows: skipped (`pip install opensmile` to run them)")
            else:
                functionals = acoustic(egemaps)
                rows["eGeMAPS + logistic regression"] = score_baseline(folds, functionals)
            rows["MFCC statistics + logistic regression"] = score_baseline(folds, acoustic(mfcc_statistics))
            statistics = acoustic(mer_statistics)
            rows["probe: logistic regression on mer's prosody statistics"] = score_baseline(folds, statistics)
            if not opensmile_missing():
                rows["probe: mer's prosody statistics + eGeMAPS, one logistic regression"] = score_baseline(
                    folds, lambda dataset: np.concatenate([statistics(dataset), functionals(dataset)], axis=1))
        else:
            fused = [*data, *recipe, "--use_prosody_statistics", "true", "--freeze_text_encoder", "true"]
            rows["mer fused (text + audio)"] = mer_scores(fused, work / f"{row}_fused", args.seeds)
            # The fusion levers of the paired benchmark: branch heads let the audio branch be scored on its own,
            # and hiding a modality now and then keeps the fused model from leaning on the sentence.
            levers = ["--auxiliary_loss_weight", "1", "--late_fusion", "true", "--modality_dropout", "0.3"]
            rows["mer fused + branch heads + modality dropout 0.3"] = mer_scores(
                [*fused, *levers], work / f"{row}_fused_levers", args.seeds)
        return rows
    if row == "demo_audio":
        data = ["--corpus", "demo", "--cv", "none"]
        rows = {} if args.no_mer else {"mer audio only": mer_scores(
            [*data, *recipe, "--modalities", "audio", "--use_prosody_statistics", "true"], work / "demo_audio",
            args.seeds)}
        _, data_args, _ = parse_arguments(data)
        folds = experiment.make_folds(load_demo(), data_args)
        # train.py's default crop (15 s) leaves every demo clip whole.
        whole = functools.partial(mer_statistics, max_seconds=DataArguments().max_audio_seconds)
        return {**rows, "prosodic statistics + logistic regression": score_baseline(folds, demo_prosody),
                "probe: logistic regression on mer's prosody statistics": score_baseline(folds, acoustic(whole))}
    raise ValueError(f"unknown row {row!r}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=["meld", "ravdess", "ravdess_bimodal", "demo_audio"])
    parser.add_argument("--epochs", type=int, default=8, help="mer training epochs of the audio rows")
    parser.add_argument("--meld-epochs", type=int, default=1, help="MiniLM fine-tuning epochs on MELD (the slow part)")
    parser.add_argument("--folds", default=None, help="RAVDESS rows: a subset of the 4 folds, e.g. '1' (faster)")
    parser.add_argument("--mer-flags", default="", help="Extra train.py flags for the mer rows of ravdess, "
                        "ravdess_bimodal and demo_audio (a lever to try), e.g. "
                        "--mer-flags='--speed_perturbation 0.9,1.1' (with '=').")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="mer rows: train once per seed and report mean ± std over folds x seeds. One seed is "
                             "one draw: on demo_audio, seeds 0 and 1 gave 54.5 and 66.5 UA.")
    parser.add_argument("--no-mer", action="store_true",
                        help="Only the classic and probe rows (meld, ravdess, demo_audio): no mer training.")
    parser.add_argument("--json", type=Path, help="Also write the per-fold figures here.")
    args = parser.parse_args()
    if args.no_mer and "ravdess_bimodal" in args.rows:
        parser.error("--no-mer leaves the ravdess_bimodal row nothing to run (it compares mer models only): drop one")
    logging.basicConfig(level=logging.WARNING)
    if not SHARED.is_dir() and any(row != "demo_audio" for row in args.rows):
        print(f"skipped: {SHARED} is absent (the real-data rows need ../shared/data beside the repository)")
        args.rows = [row for row in args.rows if row == "demo_audio"]
    table = {}
    with tempfile.TemporaryDirectory() as work:
        for row in args.rows:
            table[row] = run_row(row, args, Path(work))
            print(f"\n## {row}\n\n| model | UA (mean ± std) | weighted F1 | runs (folds x seeds) |\n|---|---|---|---|")
            for name, scores in table[row].items():
                print(f"| {name} | {summary(scores, 'ua')} | {summary(scores, 'weighted_f1')} | {len(scores)} |")
    if args.json:
        args.json.write_text(json.dumps(table, indent=1, default=float))


if __name__ == "__main__":
    main()
