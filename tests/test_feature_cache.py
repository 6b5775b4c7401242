"""Frozen-encoder feature cache: exact cached forward, cache hits, invalidation, refusals, and train_fold using it."""

import dataclasses

import datasets
import numpy as np
import pytest
import torch
from tiny_models import tiny_audio_config, tiny_config, tiny_processor, tiny_text_config

from modeling_mer import MERForSequenceClassification
from modeling_mer.data.collator import MERDataCollator
from modeling_mer.training import experiment as experiment_module
from modeling_mer.training.arguments import DataArguments, MERTrainingArguments, ModelArguments
from modeling_mer.training.feature_cache import FeatureCache

WORDS = ("the table is brown", "i am glad and happy", "i feel sad and low", "i am angry and mad")
MAX_SECONDS = 0.5


def corpus(n=12, seed=0, changed=None):
    """Clips of 0.2-0.7 s (some longer than MAX_SECONDS, so they get cropped); `changed` alters one clip."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(n):
        seconds = 0.2 + 0.5 * index / n
        wave = (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)
        if index == changed:
            wave = wave * 0.5
        rows.append({"id": f"u{index}", "text": WORDS[index % 4], "label": index % 4, "duration": seconds,
                     "session": 1 + index % 3, "speaker": f"Ses{1 + index % 3}_{'FM'[index % 2]}",
                     "audio": {"array": wave.tolist(), "sampling_rate": 16000}})
    return datasets.Dataset.from_list(rows)


def frozen_config(**overrides):
    """Tiny, dropout-free config with both encoders frozen: train-mode forwards are deterministic."""
    zero = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    audio_zero = dict(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                      layerdrop=0.0, final_dropout=0.0)
    values = dict(text_config=tiny_text_config(**zero), audio_config=tiny_audio_config(**audio_zero),
                  attention_dropout=0.0, hidden_dropout=0.0, embedding_dropout=0.0,
                  freeze_text_encoder=True, freeze_audio_encoder=True)
    return tiny_config(**{**values, **overrides})


def frozen_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return MERForSequenceClassification(frozen_config(**overrides))


def count_encoder_calls(model):
    calls = []
    for name in ("text_encoder", "speech_encoder"):
        getattr(model.mer, name).register_forward_hook(
            lambda module, args, output, name=name: calls.append((name, module.training)))
    return calls


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


def test_cached_training_forward_equals_uncached_on_a_padded_batch(tmp_path, processor):
    model = frozen_model()
    cache = FeatureCache(model, processor, tmp_path, max_audio_seconds=MAX_SECONDS)
    data = cache.prepare(corpus())
    rows = [data[i] for i in (0, 5, 11, 3)]  # 0.2 s to 0.66 s (cropped to 0.5 s): real padding on both sides
    cached = cache.data_collator(training=True)(rows)
    plain = MERDataCollator(processor, max_audio_seconds=MAX_SECONDS, training=False)(rows)
    assert cached["text_encoder_states"].shape[:2] == plain["input_ids"].shape
    calls = count_encoder_calls(model)
    model.train()
    with torch.no_grad():
        from_cache, uncached = model(**cached), model(**plain)
    assert [name for name, _ in calls] == ["text_encoder", "speech_encoder"]  # the uncached forward only
    torch.testing.assert_close(from_cache.logits, uncached.logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(from_cache.loss, uncached.loss, atol=1e-5, rtol=1e-4)


def test_second_prepare_is_a_cache_hit(tmp_path, processor):
    model = frozen_model()
    first = FeatureCache(model, processor, tmp_path, max_audio_seconds=MAX_SECONDS)
    first.prepare(corpus())
    assert first.encoded == {"text": 4, "audio": 12}  # four distinct transcripts, twelve clips
    calls = count_encoder_calls(model)
    again = FeatureCache(model, processor, tmp_path, max_audio_seconds=MAX_SECONDS)  # e.g. the next fold
    data = again.prepare(corpus())
    assert again.encoded == {"text": 0, "audio": 0} and calls == []
    batch = again.data_collator(training=True)([data[i] for i in range(4)])
    model(**batch)
    assert calls == []


def _re_encoded(tmp_path, processor, model, dataset, **kwargs):
    FeatureCache(frozen_model(), processor, tmp_path, max_audio_seconds=MAX_SECONDS).prepare(corpus())
    cache = FeatureCache(model, processor, tmp_path, **{"max_audio_seconds": MAX_SECONDS, **kwargs})
    cache.prepare(dataset)
    return cache.encoded


def test_changed_encoder_weights_invalidate_only_that_encoder(tmp_path, processor):
    model = frozen_model()
    with torch.no_grad():
        model.mer.text_encoder.model.embeddings.word_embeddings.weight[1000] += 1.0
    assert _re_encoded(tmp_path, processor, model, corpus()) == {"text": 4, "audio": 0}


def test_changed_audio_invalidates_that_clip(tmp_path, processor):
    assert _re_encoded(tmp_path, processor, frozen_model(), corpus(changed=7)) == {"text": 0, "audio": 1}


def test_changed_encoder_config_invalidates(tmp_path, processor):
    model = frozen_model(audio_config=tiny_audio_config(layer_norm_eps=1e-3, layerdrop=0.0))
    model.load_state_dict(frozen_model().state_dict())  # same weights, another config
    assert _re_encoded(tmp_path, processor, model, corpus()) == {"text": 0, "audio": 12}


def test_changed_crop_re_encodes_only_the_clips_it_cuts(tmp_path, processor):
    # Clips of 0.2 + 0.5 * i / 12 s: a 0.4 s window changes those of index 5..11 (longer than 0.4 s); the
    # five shorter ones are the same samples as before, so they are hits.
    encoded = _re_encoded(tmp_path, processor, frozen_model(), corpus(), max_audio_seconds=0.4)
    assert encoded == {"text": 0, "audio": 7}


def test_weighted_layer_sum_is_refused(tmp_path, processor):
    model = frozen_model(use_weighted_layer_sum=True)
    with pytest.raises(ValueError, match="use_weighted_layer_sum"):
        FeatureCache(model, processor, tmp_path)
    assert FeatureCache.for_model(model, processor, tmp_path) is None
    assert FeatureCache.for_model(frozen_model(freeze_text_encoder=False, freeze_audio_encoder=False),
                                  processor, tmp_path) is None


def test_only_the_frozen_encoder_is_cached_and_random_crops_stay(tmp_path, processor):
    model = frozen_model(freeze_audio_encoder=False)
    cache = FeatureCache.for_model(model, processor, tmp_path, max_audio_seconds=MAX_SECONDS)
    data = cache.prepare(corpus())
    collator = cache.data_collator(training=True)
    assert collator.base.training  # audio is not cached, so training keeps its random windows
    batch = collator([data[i] for i in range(4)])
    assert "text_encoder_states" in batch and "audio_encoder_states" not in batch


def test_train_fold_trains_on_cached_states_and_later_rows_reuse_them(tmp_path, monkeypatch, processor):
    data = corpus(n=16)
    splits = {"train": data.select(range(8)), "validation": data.select(range(8, 12)),
              "test": data.select(range(12, 16))}
    calls = []

    def tiny_builder(model_args, label_names):
        model = frozen_model(use_focus_attention=model_args.use_focus_attention)  # same encoder weights per row
        model.mer.text_encoder.register_forward_hook(lambda m, a, o: calls.append(m.training))
        model.mer.speech_encoder.register_forward_hook(lambda m, a, o: calls.append(m.training))
        return model, processor

    monkeypatch.setattr(experiment_module, "build_model", tiny_builder)
    args = MERTrainingArguments(output_dir=str(tmp_path), num_train_epochs=2, per_device_train_batch_size=4,
                                per_device_eval_batch_size=4, eval_strategy="epoch", save_strategy="no",
                                load_best_model_at_end=False, warmup_steps=0, seed=0, disable_tqdm=True,
                                use_cpu=True, report_to=[])
    data_args = DataArguments(max_audio_seconds=MAX_SECONDS)
    experiment_module.train_fold(ModelArguments(), data_args, args, splits, list(range(4)), tmp_path / "full")
    assert calls and not any(calls)  # encoders ran only while preparing the cache (eval mode), never in training
    assert any((tmp_path / "feature_cache" / "audio").iterdir())
    calls.clear()
    _, _, metrics, _, _ = experiment_module.train_fold(ModelArguments(use_focus_attention=False), data_args, args,
                                                       splits, list(range(4)), tmp_path / "no_focus")
    assert calls == [] and 0 <= metrics["ua"] <= 1  # a row that changes only the fusion encodes nothing
    # Another run (another output_dir) pointed at the same --feature_cache_dir finds everything stored.
    other_run = dataclasses.replace(args, output_dir=str(tmp_path / "other_run"),
                                    feature_cache_dir=str(tmp_path / "feature_cache"))
    experiment_module.train_fold(ModelArguments(), data_args, other_run, splits, list(range(4)), tmp_path / "again")
    assert calls == [] and not (tmp_path / "other_run" / "feature_cache").exists()
