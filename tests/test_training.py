"""MERTrainer and the experiment runner on tiny models: loss modes, accumulation, CV artefacts, no test-fold leakage."""

import dataclasses
import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from tiny_folders import save_tiny_model
from tiny_models import tiny_audio_config, tiny_config, tiny_processor, tiny_text_config

from modeling_mer import MERForSequenceClassification
from modeling_mer.data.collator import MERDataCollator
from modeling_mer.training import experiment as experiment_module
from modeling_mer.training.arguments import DataArguments, MERTrainingArguments, ModelArguments
from modeling_mer.training.trainer import MERTrainer, make_compute_metrics

LABELS = ("neutral", "happy", "sad", "angry")
WORDS = {0: "the table is brown", 1: "i am glad and happy", 2: "i feel sad and low", 3: "i am angry and mad"}


def synthetic_corpus(n_per_speaker=8, sessions=(1, 2, 3), seed=0):
    """Labels carried by the words and by the tone frequency; speakers F/M per session like IEMOCAP."""
    rng = np.random.default_rng(seed)
    rows = []
    for session in sessions:
        for gender in "FM":
            for index in range(n_per_speaker):
                label = index % 4
                seconds = rng.uniform(0.3, 0.6)
                t = np.arange(int(16000 * seconds)) / 16000
                wave = 0.3 * np.sin(2 * np.pi * (150 + 80 * label) * t) + 0.01 * rng.standard_normal(t.size)
                rows.append({"id": f"s{session}{gender}{index}", "text": WORDS[label],
                             "audio": {"array": wave.astype(np.float32).tolist(), "sampling_rate": 16000},
                             "label": label, "session": session, "speaker": f"Ses{session}_{gender}",
                             "duration": seconds})
    features = datasets.Features({
        "id": datasets.Value("string"), "text": datasets.Value("string"),
        "audio": {"array": datasets.Sequence(datasets.Value("float32")), "sampling_rate": datasets.Value("int32")},
        "label": datasets.ClassLabel(names=list(LABELS)), "session": datasets.Value("int32"),
        "speaker": datasets.Value("string"), "duration": datasets.Value("float32"),
    })
    return datasets.Dataset.from_list(rows, features=features)


def quiet_config(**overrides):
    """Tiny config without dropout, so two training runs can be compared exactly."""
    zero = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    audio_zero = dict(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                      layerdrop=0.0, final_dropout=0.0)
    return tiny_config(text_config=tiny_text_config(**zero), audio_config=tiny_audio_config(**audio_zero),
                       attention_dropout=0.0, hidden_dropout=0.0, embedding_dropout=0.0, **overrides)


def training_args(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path / "run"), num_train_epochs=1, per_device_train_batch_size=8,
                  per_device_eval_batch_size=8, learning_rate=1e-3, encoder_learning_rate=1e-4, eval_strategy="no",
                  save_strategy="no", load_best_model_at_end=False, logging_strategy="steps", logging_steps=1,
                  warmup_steps=0, seed=0, disable_tqdm=True, use_cpu=True)
    values.update(overrides)
    return MERTrainingArguments(**values)


@pytest.mark.parametrize("mining,weight", [("batch_hard", 0.5), ("batch_all", 0.5), ("semi_hard", 0.5),
                                           ("batch_hard", 0.0)])
def test_trainer_steps_and_logs_loss_parts(tmp_path, mining, weight):
    torch.manual_seed(0)
    model = MERForSequenceClassification(tiny_config(triplet_mining=mining, triplet_weight=weight))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = MERTrainer(model=model, args=training_args(tmp_path, max_steps=3),
                         train_dataset=synthetic_corpus(), data_collator=MERDataCollator(tiny_processor()))
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logs and all(np.isfinite(entry["loss"]) for entry in logs)
    assert all("ce_loss" in entry and "triplet_loss" in entry for entry in logs)
    if weight == 0:
        assert all(entry["triplet_loss"] == 0 for entry in logs)
    changed = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert any(name.startswith("mer.text_to_audio") for name in changed)
    assert any(name.startswith("mer.text_encoder") for name in changed)


def test_label_ids_outside_the_model_fail_when_the_trainer_is_built(tmp_path):
    corpus = synthetic_corpus().cast_column("label", datasets.Value("int64"))
    corpus = corpus.map(lambda row, index: {"label": 7 if index == 3 else row["label"]}, with_indices=True)
    model = MERForSequenceClassification(tiny_config())
    with pytest.raises(ValueError, match=r"train_dataset has label id\(s\) \[7\] outside this model's 4 classes"):
        MERTrainer(model=model, args=training_args(tmp_path), train_dataset=corpus,
                   data_collator=MERDataCollator(tiny_processor()))


def test_trainer_uses_its_own_dataloader_with_the_class_balanced_sampler(tmp_path):
    """Only the sampler is replaced: the Trainer's DataLoader keeps its workers' settings (prefetch, persistence)."""
    model = MERForSequenceClassification(tiny_config(triplet_weight=0.5))
    trainer = MERTrainer(model=model, args=training_args(tmp_path, dataloader_num_workers=1,
                                                          dataloader_prefetch_factor=3,
                                                          dataloader_persistent_workers=True),
                         train_dataset=synthetic_corpus(), data_collator=MERDataCollator(tiny_processor()))
    loader = trainer.get_train_dataloader()
    assert loader.prefetch_factor == 3 and loader.persistent_workers
    labels = synthetic_corpus()["label"]
    order = list(loader.batch_sampler.sampler if hasattr(loader.batch_sampler, "sampler") else loader.sampler)
    first = [labels[i] for i in order[:8]]
    assert sorted(first) == [0, 0, 1, 1, 2, 2, 3, 3]  # 4 classes x 2 in every batch of 8


def test_encoders_and_fusion_get_their_own_learning_rates(tmp_path):
    model = MERForSequenceClassification(tiny_config())
    trainer = MERTrainer(model=model, args=training_args(tmp_path, learning_rate=1e-3, encoder_learning_rate=1e-5),
                         train_dataset=synthetic_corpus(), data_collator=MERDataCollator(tiny_processor()))
    optimizer = trainer.create_optimizer()
    rates = {}
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            rates[id(parameter)] = group["lr"]
    for name, parameter in model.named_parameters():
        expected = 1e-5 if name.startswith(("mer.text_encoder.model.", "mer.speech_encoder.model.")) else 1e-3
        assert rates[id(parameter)] == expected, name


def test_gradient_accumulation_matches_the_large_batch(tmp_path):
    """2 x batch 4 with accumulation == batch 8: the Trainer divides the loss (forward takes no **kwargs).

    Triplet weight 0: triplet mining happens inside each micro-batch, so it cannot equal the large batch by design.
    """
    corpus = synthetic_corpus(n_per_speaker=4, sessions=(1,))
    weights = []
    for batch_size, accumulation in ((8, 1), (4, 2)):
        torch.manual_seed(0)
        model = MERForSequenceClassification(quiet_config(triplet_weight=0.0))
        args = training_args(tmp_path, per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation,
                             max_steps=1, train_sampling_strategy="sequential", optim="sgd", max_grad_norm=0.0,
                             learning_rate=0.5, encoder_learning_rate=0.5, weight_decay=0.0)
        MERTrainer(model=model, args=args, train_dataset=corpus,
                   data_collator=MERDataCollator(tiny_processor())).train()
        weights.append({name: p.detach().clone() for name, p in model.named_parameters()})
    torch.manual_seed(0)
    initial = {name: p.detach() for name, p in MERForSequenceClassification(quiet_config(triplet_weight=0.0))
               .named_parameters()}
    moved = 0
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, atol=2e-6, rtol=1e-4, msg=name)
        moved += not torch.equal(value, initial[name])
    assert moved > 10  # the step really changed the weights


def test_cross_validation_writes_artefacts_and_never_selects_on_test(tmp_path, monkeypatch):
    corpus = synthetic_corpus()
    seen = []

    def tiny_builder(model_args, label_names):
        config = tiny_config(modalities=model_args.modality_tuple, triplet_weight=model_args.triplet_weight,
                             use_focus_attention=model_args.use_focus_attention,
                             id2label=dict(enumerate(label_names)))
        return MERForSequenceClassification(config), tiny_processor()

    original_trainer_init = MERTrainer.__init__

    def recording_init(self, *args, **kwargs):
        seen.append((set(kwargs["train_dataset"]["id"]), set(kwargs["eval_dataset"]["id"])))
        original_trainer_init(self, *args, **kwargs)

    monkeypatch.setattr(experiment_module, "build_model", tiny_builder)
    monkeypatch.setattr(experiment_module, "load_data", lambda data_args: (corpus, list(LABELS)))
    monkeypatch.setattr(MERTrainer, "__init__", recording_init)
    args = training_args(tmp_path, num_train_epochs=1, eval_strategy="epoch", save_strategy="epoch",
                         load_best_model_at_end=True, logging_strategy="epoch")
    results, summary = experiment_module.run(ModelArguments(), DataArguments(cv="loso", ablation=True), args)

    output = tmp_path / "run"
    for name in ("results.json", "results.md", "confusion_matrix.png", "embeddings.png", "model/config.json",
                 "model/model.safetensors", "model/README.md", "model/processor_config.json"):
        assert (output / name).exists(), name
    assert set(results) == {"text only", "audio only", "no focus attention", "no triplet loss",
                            "+ branch heads, modality dropout", "full model"}
    assert all(set(folds) == {1, 2, 3} for folds in results.values())
    stored = json.loads((output / "results.json").read_text())
    assert stored["summary"]["full model"]["ua"][0] == pytest.approx(summary["full model"]["ua"][0])
    # Every fold's training and selection data come from other sessions than its test session.
    folds = experiment_module.make_folds(corpus, DataArguments(cv="loso"))
    test_sets = [set(splits["test"]["id"]) for splits in folds.values()]
    assert len(seen) == 6 * 3
    for index, (train_ids, eval_ids) in enumerate(seen):
        test_ids = test_sets[index % 3]
        assert not train_ids & test_ids and not eval_ids & test_ids
        assert eval_ids and not train_ids & eval_ids


def test_each_fold_saves_its_test_logits_and_labels_in_the_test_splits_row_order(tmp_path, monkeypatch):
    """test_predictions.npz (per-example analyses read it): one row per test utterance, in the split's order,
    although the evaluation sampler hands the rows over grouped by length."""
    corpus = synthetic_corpus()

    def tiny_builder(model_args, label_names):
        return MERForSequenceClassification(tiny_config(id2label=dict(enumerate(label_names)))), tiny_processor()

    monkeypatch.setattr(experiment_module, "build_model", tiny_builder)
    monkeypatch.setattr(experiment_module, "load_data", lambda data_args: (corpus, list(LABELS)))
    args = training_args(tmp_path, max_steps=2)  # the default group_by_length: the test rows come sorted by length
    experiment_module.run(ModelArguments(), DataArguments(cv="loso"), args)
    for fold, splits in experiment_module.make_folds(corpus, DataArguments(cv="loso")).items():
        test = splits["test"]
        assert not np.array_equal(np.argsort(test["duration"]), np.arange(len(test)))  # the order had to be undone
        folder = experiment_module.fold_dir(tmp_path / "run", "full model", fold)
        saved = np.load(folder / "test_predictions.npz")
        assert saved["logits"].shape == (len(test), len(LABELS))
        np.testing.assert_array_equal(saved["label_ids"], test["label"])
        # Row i holds utterance i's own logits: the fold's saved model run on that utterance alone.
        model = MERForSequenceClassification.from_pretrained(folder).eval()
        collate = MERDataCollator(tiny_processor(), max_audio_seconds=15.0)
        with torch.no_grad():
            alone = np.concatenate([model(**collate([row])).logits.numpy() for row in test])
        np.testing.assert_allclose(saved["logits"], alone, atol=1e-4)


def test_impossible_arguments_fail_before_any_model_is_built(tmp_path):
    with pytest.raises(ValueError, match="per_device_train_batch_size 4 or more"):
        experiment_module.check_arguments(ModelArguments(triplet_weight=0.5), DataArguments(),
                                          training_args(tmp_path, per_device_train_batch_size=2))
    with pytest.raises(ValueError, match="triplet_mining"):
        experiment_module.check_arguments(ModelArguments(triplet_mining="hardest"), DataArguments(),
                                          training_args(tmp_path))
    with pytest.raises(ValueError, match="--cv 'kfold' is unknown"):
        experiment_module.check_arguments(ModelArguments(), DataArguments(cv="kfold"), training_args(tmp_path))
    with pytest.raises(ValueError, match="corpus_path"):
        experiment_module.check_arguments(ModelArguments(), DataArguments(corpus="iemocap"), training_args(tmp_path))
    # Trainer's own smoothing flag would be silently ignored by the model's joint loss: refused, naming ours.
    with pytest.raises(ValueError, match="--label_smoothing_factor 0.1 .* pass --label_smoothing"):
        experiment_module.check_arguments(ModelArguments(), DataArguments(),
                                          training_args(tmp_path, label_smoothing_factor=0.1))
    with pytest.raises(ValueError, match=r"MERConfig\.label_smoothing=1\.5 .* \[0, 1\)"):
        experiment_module.check_arguments(ModelArguments(label_smoothing=1.5), DataArguments(), training_args(tmp_path))


def test_an_ablation_row_that_cannot_be_built_fails_before_any_data_is_read(tmp_path, monkeypatch):
    def no_loading(data_args):
        raise AssertionError("the corpus was read before the rows were checked")

    monkeypatch.setattr(experiment_module, "load_data", no_loading)
    # Modality dropout hides one of two modalities: the lever row cannot be built on an audio-only model.
    with pytest.raises(ValueError, match=r"--ablation row '\+ branch heads, modality dropout'.*modality_dropout"):
        experiment_module.run(ModelArguments(modalities="audio"), DataArguments(ablation=True), training_args(tmp_path))
    # A full model with modality dropout still gets its unimodal rows (they hide nothing): the check passes on
    # to the data.
    with pytest.raises(AssertionError, match="the corpus was read"):
        experiment_module.run(ModelArguments(modality_dropout=0.3), DataArguments(ablation=True),
                              training_args(tmp_path))


def test_bf16_mixed_precision_run_trains_and_saves_float32_weights(tmp_path, monkeypatch):
    """--bf16 (CPU autocast here, CUDA autocast on a GPU): the run completes, the loss parts are finite, and the
    saved model keeps float32 master weights."""
    def tiny_builder(model_args, label_names):
        return MERForSequenceClassification(tiny_config(id2label=dict(enumerate(label_names)))), tiny_processor()

    monkeypatch.setattr(experiment_module, "build_model", tiny_builder)
    monkeypatch.setattr(experiment_module, "load_data", lambda data_args: (synthetic_corpus(), list(LABELS)))
    args = training_args(tmp_path, bf16=True, max_steps=3, save_strategy="steps", save_steps=3)
    results, _ = experiment_module.run(ModelArguments(), DataArguments(), args)
    assert 0 <= results["full model"][3]["ua"] <= 1
    history = json.loads((tmp_path / "run" / "runs" / "full_model" / "fold_3" / "checkpoint-3" /
                                     "trainer_state.json").read_text())
    logged = [entry for entry in history["log_history"] if "ce_loss" in entry]
    assert logged and all(np.isfinite([entry["loss"], entry["ce_loss"], entry["triplet_loss"]]).all()
                          for entry in logged)
    saved = MERForSequenceClassification.from_pretrained(tmp_path / "run" / "model")
    assert {p.dtype for p in saved.parameters()} == {torch.float32}


def test_empty_transcripts_fail_before_any_model_is_built(tmp_path, monkeypatch):
    corpus = synthetic_corpus()
    corpus = corpus.map(lambda row, index: {"text": "  " if index in (3, 7) else row["text"]}, with_indices=True)

    def no_model(*_):
        raise AssertionError("a model was built before the transcripts were checked")

    monkeypatch.setattr(experiment_module, "build_model", no_model)
    monkeypatch.setattr(experiment_module, "load_data", lambda data_args: (corpus, list(LABELS)))
    with pytest.raises(ValueError, match=rf"2 of {len(corpus)} utterances have an empty transcript.*"
                                         rf"{corpus[3]['id']}.*--modalities audio"):
        experiment_module.run(ModelArguments(), DataArguments(), training_args(tmp_path))
    experiment_module.check_transcripts(corpus, {"audio"})  # audio-only training never reads the text


def test_compute_metrics_reports_ua_for_best_model_selection():
    from transformers import EvalPrediction

    logits = np.eye(4)[[0, 1, 2, 3, 0, 0]]
    metrics = make_compute_metrics(list(LABELS))(EvalPrediction(predictions=(logits, None),
                                                                label_ids=np.array([0, 1, 2, 3, 1, 0])))
    assert metrics["wa"] == pytest.approx(5 / 6) and metrics["ua"] == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    assert "confusion_matrix" not in metrics


def test_train_push_to_hub_sends_model_processor_code_and_card(tmp_path, monkeypatch, hub_endpoint):
    from huggingface_hub import HfApi

    corpus = synthetic_corpus(sessions=(1, 2))
    monkeypatch.setattr(experiment_module, "build_model", lambda model_args, label_names: (
        MERForSequenceClassification(tiny_config(id2label=dict(enumerate(label_names)))), tiny_processor()))
    monkeypatch.setattr(experiment_module, "load_data", lambda data_args: (corpus, list(LABELS)))
    args = training_args(tmp_path, max_steps=1, push_to_hub=True, hub_model_id="test-user/mer-run", hub_token="t")
    experiment_module.run(ModelArguments(), DataArguments(cv="none"), args)
    files = set(HfApi(endpoint=hub_endpoint, token="t").list_repo_files("test-user/mer-run"))
    assert {"config.json", "model.safetensors", "processor_config.json", "modeling_mer.py", "pipeline_mer.py",
            "processing_mer.py", "README.md"} <= files
    assert not any(name.startswith(("checkpoint-", "runs/")) for name in files)  # fold runs never push


def test_a_test_split_that_cannot_be_collated_fails_before_any_training_step(tmp_path, monkeypatch):
    """Part of the final test that would break after all the training breaks in the first seconds instead."""
    corpus = synthetic_corpus()
    broken = corpus.filter(lambda row: row["session"] == 3).select([0])["id"][0]
    corpus = corpus.map(lambda row: {"audio": {"array": [float("nan")] * 8000, "sampling_rate": 16000}}
                        if row["id"] == broken else {})
    trained = []

    def tiny_builder(model_args, label_names):
        config = tiny_config(id2label=dict(enumerate(label_names)))
        return MERForSequenceClassification(config), tiny_processor()

    monkeypatch.setattr(experiment_module, "build_model", tiny_builder)
    monkeypatch.setattr(experiment_module, "load_data", lambda data_args: (corpus, list(LABELS)))
    monkeypatch.setattr(MERTrainer, "train", lambda self, **kwargs: trained.append(True))
    with pytest.raises(ValueError, match=r"Before training: the first test batch fails \(item \d+ \(s3F0\).*NaN/inf.*final test"):
        experiment_module.run(ModelArguments(), DataArguments(cv="none"), training_args(tmp_path))
    assert not trained


# --- an existing run is never replaced silently -----------------------------------------------------------------

def _tiny_run(tmp_path, monkeypatch, **overrides):
    monkeypatch.setattr(experiment_module, "build_model", lambda model_args, label_names: (
        MERForSequenceClassification(tiny_config(id2label=dict(enumerate(label_names)))), tiny_processor()))
    monkeypatch.setattr(experiment_module, "load_data", lambda data_args: (synthetic_corpus(sessions=(1, 2)),
                                                                           list(LABELS)))
    return experiment_module.run(ModelArguments(), DataArguments(), training_args(tmp_path, max_steps=1, **overrides))


def _snapshot(folder):
    return {path.relative_to(folder): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()
            and "feature_cache" not in path.parts}


def test_a_finished_run_is_never_overwritten_without_asking(tmp_path, monkeypatch):
    _tiny_run(tmp_path, monkeypatch)
    output = tmp_path / "run"
    before = _snapshot(output)
    assert Path("results.json") in before and Path("model/model.safetensors") in before
    with pytest.raises(FileExistsError, match=r"--output_dir '.*run' already holds a run \(.*results.json.*"
                                              r"--resume_from_checkpoint last.*--overwrite_output_dir true"):
        _tiny_run(tmp_path, monkeypatch, seed=1, learning_rate=5e-3)
    assert _snapshot(output) == before  # byte-identical: weights, results, plots and fold folders
    # Continuing is still allowed: the finished fold is reloaded and re-tested, not trained.
    _tiny_run(tmp_path, monkeypatch, resume_from_checkpoint="last")
    assert json.loads((output / "results.json").read_text()) == json.loads(before[Path("results.json")])
    # Asked explicitly: replaced.
    _tiny_run(tmp_path, monkeypatch, seed=1, learning_rate=5e-3, overwrite_output_dir=True)
    assert (output / "model" / "model.safetensors").read_bytes() != before[Path("model/model.safetensors")]


def test_output_dir_that_is_a_file_is_refused(tmp_path, monkeypatch):
    (tmp_path / "run").write_text("notes")
    with pytest.raises(NotADirectoryError, match=r"--output_dir '.*run' is an existing file, not a folder"):
        _tiny_run(tmp_path, monkeypatch)
    assert (tmp_path / "run").read_text() == "notes"


def test_ctrl_c_in_train_py_is_one_line_and_exit_130(monkeypatch, capsys, tmp_path):
    import train

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "run", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--output_dir", str(tmp_path / "x"), "--use_cpu", "true"])
    assert exit_info.value.code == 130
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Interrupted" in lines[0] and "--resume_from_checkpoint last" in lines[0]


def test_clips_shorter_than_the_receptive_field_fail_before_training_naming_the_file(tmp_path, monkeypatch):
    corpus = synthetic_corpus(sessions=(1, 2))
    durations = list(corpus["duration"])
    durations[5] = 0.02  # 320 samples: below the default small speech encoder's 400
    corpus = corpus.remove_columns("duration").add_column("duration", durations)
    corpus = corpus.map(lambda row, index: {"id": "tiny_clip" if index == 5 else row["id"]}, with_indices=True)

    def no_model(*_):
        raise AssertionError("a model was built before the durations were checked")

    monkeypatch.setattr(experiment_module, "build_model", no_model)
    monkeypatch.setattr(experiment_module, "load_data", lambda data_args: (corpus, list(LABELS)))
    with pytest.raises(ValueError, match=r"1 clip\(s\) are shorter than the speech encoder's receptive field \(400 "
                                         r"samples = 25.0 ms\).*'tiny_clip \(0.0200 s\)'.*Remove them"):
        experiment_module.run(ModelArguments(), DataArguments(), training_args(tmp_path))
    experiment_module.check_durations(corpus, {"text"}, 400)  # text-only training never reads the audio


# --- every corpus shape through train.py, end to end -------------------------------------------------------------

SHAPE_SPEAKERS, SHAPE_LABELS, SHAPE_TAKES = 4, ("calm", "angry"), 2
TINY_TRAIN = ["--d_model", "16", "--num_crossmodal_layers", "1", "--num_attention_heads", "2",
              "--freeze_text_encoder", "true", "--triplet_weight", "0", "--max_steps", "2",
              "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8", "--warmup_steps", "0",
              "--eval_strategy", "steps", "--eval_steps", "2", "--save_strategy", "steps", "--save_steps", "2",
              "--logging_steps", "1", "--num_speaker_folds", str(SHAPE_SPEAKERS), "--use_cpu", "true",
              "--disable_tqdm", "true", "--report_to", "none", "--seed", "0"]


def shape_rows(root, folder="clips"):
    """4 speakers x 2 labels x 2 takes, each clip a tone of its own (0.3 s): rows with paths relative to root."""
    import soundfile

    (root / folder).mkdir(parents=True, exist_ok=True)
    rows = []
    for speaker in range(SHAPE_SPEAKERS):
        for position, label in enumerate(SHAPE_LABELS):
            for take in range(SHAPE_TAKES):
                name = f"{folder}/s{speaker}_{label}_{take}.wav"
                t = np.arange(4800) / 16000
                tone = 200 + 20 * speaker + 7 * take + 300 * position
                soundfile.write(root / name, (0.3 * np.sin(2 * np.pi * tone * t)).astype(np.float32), 16000)
                rows.append({"path": name, "text": f"i feel {label} now, take {take}", "label": label,
                             "speaker": f"s{speaker}", "duration": 0.3})
    return rows


def write_table(path, rows, delimiter=","):
    import csv

    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def corpus_shape(root, shape):
    """(corpus argument for train.py, extra flags) for one way a user may hand over a corpus."""
    rows = shape_rows(root)
    if shape == "csv_mixed_paths":  # relative, absolute, '..' and through a symlinked folder, in one manifest
        (root / "linked").symlink_to(root / "clips", target_is_directory=True)
        (root / "meta").mkdir()
        for index, row in enumerate(rows):
            kind = index % 4
            row["path"] = {0: "../" + row["path"], 1: str(root / row["path"]),
                           2: "../linked/" + Path(row["path"]).name, 3: "../clips/./" + Path(row["path"]).name}[kind]
        return write_table(root / "meta" / "corpus.csv", rows), []
    if shape == "tsv":
        return write_table(root / "corpus.tsv", rows, "\t"), []
    if shape == "nemo_jsonl":
        with open(root / "nemo.jsonl", "w") as handle:
            for row in rows:
                handle.write(json.dumps({"audio_filepath": str(root / row["path"]), "text": row["text"],
                                         "duration": row["duration"], "label": row["label"],
                                         "speaker": row["speaker"]}) + "\n")
        return root / "nemo.jsonl", []
    if shape == "audiofolder":
        for row in rows:
            row["file_name"] = Path(row.pop("path")).name
        write_table(root / "clips" / "metadata.csv", [{"file_name": r["file_name"], **r} for r in rows])
        return root / "clips", []
    if shape == "text_only":
        return write_table(root / "text.csv", [{k: v for k, v in r.items() if k not in ("path", "duration")}
                                               for r in rows]), ["--modalities", "text"]
    if shape == "audio_only":
        return write_table(root / "audio.csv", [{k: v for k, v in r.items() if k != "text"} for r in rows]), \
            ["--modalities", "audio"]
    columns = {"audio": [str(root / r["path"]) for r in rows], "text": [r["text"] for r in rows],
               "label": [SHAPE_LABELS.index(r["label"]) for r in rows], "speaker": [r["speaker"] for r in rows]}
    features = datasets.Features({"audio": datasets.Audio(sampling_rate=16000), "text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=list(SHAPE_LABELS)),
                                  "speaker": datasets.Value("string")})
    whole = datasets.Dataset.from_dict(columns).cast(features)
    if shape == "saved_dataset":
        whole.save_to_disk(str(root / "saved"))
        return root / "saved", []
    assert shape == "saved_dataset_dict"  # ready-made splits, by speaker: used as given with --cv none
    speakers = np.asarray(columns["speaker"])
    splits = {name: whole.select(np.flatnonzero(np.isin(speakers, group)).tolist())
              for name, group in (("train", ["s0", "s1"]), ("validation", ["s2"]), ("test", ["s3"]))}
    datasets.DatasetDict(splits).save_to_disk(str(root / "saved_dict"))
    return root / "saved_dict", ["--cv", "none"]


@pytest.mark.parametrize("shape", ["csv_mixed_paths", "tsv", "nemo_jsonl", "audiofolder", "text_only", "audio_only",
                                   "saved_dataset", "saved_dataset_dict"])
def test_every_corpus_shape_trains_evaluates_tests_and_saves_through_train_py(tmp_path, shape):
    from test_model_card import hub_metadata_problems

    import train

    corpus, extra = corpus_shape(tmp_path / "corpus", shape)
    output = tmp_path / "out"
    train.main(["--corpus", str(corpus), "--output_dir", str(output), *TINY_TRAIN, *extra])
    results = json.loads((output / "results.json").read_text())
    (fold,) = results["folds"]["full model"].values()
    assert results["label_names"] == sorted(SHAPE_LABELS) and 0 <= fold["ua"] <= 1
    assert sum(sum(row) for row in fold["confusion_matrix"]) == SHAPE_TAKES * len(SHAPE_LABELS)  # one test speaker
    (fold_dir,) = (output / "runs" / "full_model").iterdir()
    if shape == "saved_dataset_dict":
        assert fold_dir.name == "fold_given"
    state = json.loads((fold_dir / "checkpoint-2" / "trainer_state.json").read_text())
    assert any("eval_ua" in entry for entry in state["log_history"])  # at least one evaluation ran
    model = MERForSequenceClassification.from_pretrained(output / "model")
    assert model.config.id2label == dict(enumerate(sorted(SHAPE_LABELS)))
    assert model.config.modalities == {"text_only": ("text",), "audio_only": ("audio",)}.get(shape, ("text", "audio"))
    assert hub_metadata_problems(output / "model" / "README.md") == []


def test_fine_tuning_takes_this_runs_training_flags_and_refuses_architecture_flags(tmp_path):
    # --init_from used to pass on only the triplet and freeze flags: --label_smoothing or --modality_dropout on a
    # fine-tuning run were dropped without a word, and so was an architecture flag such as --d_model.
    save_tiny_model(tmp_path / "trained", d_model=32)
    model_args = ModelArguments(init_from=str(tmp_path / "trained"), label_smoothing=0.1, modality_dropout=0.3,
                                triplet_weight=0.0, d_model=32)  # d_model as saved: nothing to refuse
    experiment_module.with_checkpoint_architecture(model_args)
    model, _ = experiment_module.build_model(model_args, ["calm", "angry"])
    config = model.config
    assert (config.label_smoothing, config.modality_dropout, config.triplet_weight) == (0.1, 0.3, 0.0)
    assert config.d_model == 32 and config.id2label == {0: "calm", 1: "angry"}
    with pytest.raises(ValueError, match=r"--d_model 64 \(the checkpoint has 32\) cannot apply: drop"):
        experiment_module.with_checkpoint_architecture(dataclasses.replace(model_args, d_model=64))


def test_fine_tuning_an_audio_only_model_needs_no_modalities_flag(tmp_path):
    # The corpus checks used to read --modalities (default text,audio) rather than the checkpoint's, so an
    # audio-only model could not be fine-tuned on an audio-only corpus without repeating --modalities audio.
    import train

    corpus, audio_only = corpus_shape(tmp_path / "corpus", "audio_only")
    train.main(["--corpus", str(corpus), "--output_dir", str(tmp_path / "trained"), *TINY_TRAIN, *audio_only])
    train.main(["--corpus", str(corpus), "--output_dir", str(tmp_path / "tuned"), *TINY_TRAIN,
                "--init_from", str(tmp_path / "trained" / "model")])
    assert MERForSequenceClassification.from_pretrained(tmp_path / "tuned" / "model").config.modalities == ("audio",)
    with pytest.raises(ValueError, match=r"--modalities \('text',\) \(the checkpoint has \('audio',\)\) cannot apply"):
        train.main(["--corpus", str(corpus), "--output_dir", str(tmp_path / "refused"), *TINY_TRAIN,
                    "--init_from", str(tmp_path / "trained" / "model"), "--modalities", "text"])
