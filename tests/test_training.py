"""MERTrainer and the experiment runner on tiny models: loss modes, accumulation, CV artefacts, no test-fold leakage."""

import json

import datasets
import numpy as np
import pytest
import torch
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
    assert set(results) == {"text only", "audio only", "no focus attention", "no triplet loss", "full model"}
    assert all(set(folds) == {1, 2, 3} for folds in results.values())
    stored = json.loads((output / "results.json").read_text())
    assert stored["summary"]["full model"]["ua"][0] == pytest.approx(summary["full model"]["ua"][0])
    # Every fold's training and selection data come from other sessions than its test session.
    folds = experiment_module.make_folds(corpus, DataArguments(cv="loso"))
    test_sets = [set(splits["test"]["id"]) for splits in folds.values()]
    assert len(seen) == 5 * 3
    for index, (train_ids, eval_ids) in enumerate(seen):
        test_ids = test_sets[index % 3]
        assert not train_ids & test_ids and not eval_ids & test_ids
        assert eval_ids and not train_ids & eval_ids


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
