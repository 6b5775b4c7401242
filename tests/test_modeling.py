"""MERModel / MERForSequenceClassification: shapes, padding invariance, gradients, stock-encoder equivalence."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import random_batch, tiny_audio_config, tiny_config, tiny_processor, tiny_text_config
from transformers import AutoModel

from modeling_mer import MERForSequenceClassification, MERModel
from modeling_mer.encoders_mer import SpeechEncoder, TextEncoder, receptive_field


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


def single_example(batch, index):
    """Example `index` of a padded batch with its padding removed."""
    text_length = int(batch["attention_mask"][index].sum()) if "attention_mask" in batch else None
    audio_length = int(batch["audio_attention_mask"][index].sum()) if "audio_attention_mask" in batch else None
    lengths = {"input_ids": text_length, "attention_mask": text_length,
               "input_values": audio_length, "audio_attention_mask": audio_length}
    return {key: value[index:index + 1, :lengths[key]] for key, value in batch.items()}


@pytest.mark.parametrize("modalities", [("text", "audio"), ("text",), ("audio",)])
@pytest.mark.parametrize("use_focus_attention", [True, False])
@pytest.mark.parametrize("use_prosody_branch", [True, False])
def test_output_fields_and_shapes(processor, modalities, use_focus_attention, use_prosody_branch):
    config = tiny_config(modalities=modalities, use_focus_attention=use_focus_attention,
                         use_prosody_branch=use_prosody_branch)
    batch = random_batch(processor)
    model = MERForSequenceClassification(config).eval()
    output = model(**batch, labels=torch.tensor([0, 3]), output_attentions=True)
    assert list(output.keys())[:5] == ["loss", "logits", "embeddings", "ce_loss", "triplet_loss"]
    assert output.logits.shape == (2, 4) and output.embeddings.shape == (2, config.embedding_size)
    assert torch.isfinite(output.loss)
    torch.testing.assert_close(output.loss, output.ce_loss + config.triplet_weight * output.triplet_loss)
    if modalities == ("text", "audio"):
        text_length, frames = batch["input_ids"].shape[1], output.audio_frame_mask.shape[1]
        assert len(output.text_to_audio_attentions) == config.num_crossmodal_layers
        assert output.text_to_audio_attentions[0].shape == (2, config.num_attention_heads, frames, text_length)
        assert output.audio_to_text_attentions[0].shape == (2, config.num_attention_heads, text_length, frames)
        if use_focus_attention:
            assert output.text_to_audio_focus_centres[0].shape == (2, config.num_attention_heads, frames)
            assert output.audio_to_text_focus_widths[0].shape == (2, config.num_attention_heads, text_length)
        else:
            assert output.text_to_audio_focus_centres[0] is None
    base = MERModel(config).eval()(**batch)
    assert base.embeddings.shape == (2, config.embedding_size)
    assert (base.text_states is not None) == ("text" in modalities)
    assert (base.audio_states is not None) == ("audio" in modalities)


PADDING_CASES = {
    "wav2vec2-base (group norm)": dict(),
    "wav2vec2-large (layer norm)": dict(audio_config=tiny_audio_config(feat_extract_norm="layer",
                                                                       do_stable_layer_norm=True)),
    "hubert": dict(audio_config=tiny_audio_config("hubert")),
    "wavlm": dict(audio_config=tiny_audio_config("wavlm")),
    "roberta text, key focus, max pool": dict(text_config=tiny_text_config("roberta"), focus_source="key",
                                              pooling="max"),
    "weighted layer sum": dict(use_weighted_layer_sum=True),
}


@pytest.mark.parametrize("case", PADDING_CASES)
def test_padded_batch_equals_each_example_alone(processor, case):
    torch.manual_seed(0)
    model = MERForSequenceClassification(tiny_config(**PADDING_CASES[case])).eval()
    texts = ("i am so very happy today, this is the best day of my whole life", "no", "why")
    batch = random_batch(processor, lengths=(6400, 700, 2500), texts=texts)
    with torch.no_grad():
        batched = model(**batch).logits
        for index in range(3):
            alone = model(**single_example(batch, index)).logits[0]
            torch.testing.assert_close(batched[index], alone, atol=1e-5, rtol=0)


def test_stock_group_norm_would_break_padding_invariance():
    """Why MaskedGroupNorm exists: with the stock GroupNorm, padding changes a wav2vec2-base example's frames."""
    torch.manual_seed(0)
    audio_config = tiny_audio_config()
    masked = SpeechEncoder(tiny_config(use_prosody_branch=False), audio_config).eval()
    stock = SpeechEncoder(tiny_config(use_prosody_branch=False), audio_config).eval()
    stock.load_state_dict(masked.state_dict())
    first_layer = stock.model.feature_extractor.conv_layers[0]
    first_layer.layer_norm = torch.nn.GroupNorm(32, 32).requires_grad_(False)
    first_layer.layer_norm.load_state_dict(masked.first_norm.state_dict())
    assert stock.first_norm is None and masked.first_norm is not None
    waveforms = torch.randn(2, 6400)
    mask = torch.ones(2, 6400, dtype=torch.long)
    mask[1, 700:] = 0
    waveforms[1, 700:] = 0
    with torch.no_grad():
        differences = {}
        for name, encoder in (("masked", masked), ("stock", stock)):
            padded, frame_mask = encoder(waveforms, mask)
            alone, _ = encoder(waveforms[1:, :700], mask[1:, :700])
            valid = padded[1][frame_mask[1]]
            differences[name] = ((valid - alone[0]).abs().max() / alone.abs().max()).item()
    assert differences["masked"] < 1e-5
    assert differences["stock"] > 1e-2  # the size of the effect this design removes


def test_every_trainable_parameter_gets_a_gradient(processor):
    torch.manual_seed(0)
    model = MERForSequenceClassification(tiny_config(use_weighted_layer_sum=True)).train()
    batch = random_batch(processor, lengths=(3000, 2000, 2500, 1800),
                         texts=("i am happy", "so sad", "angry now", "fine"))
    model(**batch, labels=torch.tensor([0, 0, 1, 1])).loss.backward()
    missing = [name for name, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert missing == []


def test_bf16_autocast_training_step_and_a_bf16_model_agree_with_float32(processor):
    """Mixed precision (what --bf16 does) trains every parameter; a model cast to bf16 takes the processor's
    float32 audio and predicts what the float32 model predicts, up to bf16 rounding."""
    torch.manual_seed(0)
    model = MERForSequenceClassification(tiny_config()).train()
    batch = random_batch(processor, lengths=(3000, 2000, 2500, 1800),
                         texts=("i am happy", "so sad", "angry now", "fine"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch, labels=torch.tensor([0, 0, 1, 1])).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)

    model.eval()
    with torch.no_grad():
        expected = model(**batch).logits.softmax(-1)
        got = model.to(torch.bfloat16)(**batch).logits.float().softmax(-1)
    torch.testing.assert_close(got, expected, atol=2e-2, rtol=0)


@pytest.mark.parametrize("switch,prefix", [
    ("freeze_feature_encoder", "mer.speech_encoder.model.feature_extractor."),
    ("freeze_audio_encoder", "mer.speech_encoder.model."),
    ("freeze_text_encoder", "mer.text_encoder.model."),
])
def test_frozen_parameters_get_no_gradient(processor, switch, prefix):
    model = MERForSequenceClassification(tiny_config(**{switch: True})).train()
    batch = random_batch(processor)
    model(**batch, labels=torch.tensor([0, 1])).loss.backward()
    frozen = [(name, p) for name, p in model.named_parameters() if name.startswith(prefix)]
    assert frozen and all(not p.requires_grad and p.grad is None for _, p in frozen)
    others = [p for name, p in model.named_parameters() if not name.startswith(prefix)]
    assert all(p.requires_grad and p.grad is not None for p in others)


def test_gradient_checkpointing_gives_the_same_gradients(processor):
    batch = random_batch(processor)
    labels = torch.tensor([0, 1])
    gradients = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = MERForSequenceClassification(tiny_config()).train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert model.mer.text_encoder.model.encoder.layer[0].gradient_checkpointing
            assert model.mer.speech_encoder.model.encoder.layers[0].gradient_checkpointing
        torch.manual_seed(1)
        model(**batch, labels=labels).loss.backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert gradients[0].keys() == gradients[1].keys()
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, atol=1e-5, rtol=1e-4, msg=name)


def test_text_branch_reproduces_stock_roberta(processor):
    config = tiny_text_config("roberta")
    encoder = TextEncoder(config).eval()
    stock = AutoModel.from_config(config, add_pooling_layer=False).eval()
    stock.load_state_dict(encoder.model.state_dict())
    batch = processor(text=["hello there my friend", "hi"])
    with torch.no_grad():
        ours = encoder(batch["input_ids"], batch["attention_mask"])
        reference = stock(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    torch.testing.assert_close(ours, reference, atol=0, rtol=0)


@pytest.mark.parametrize("feat_extract_norm", ["group", "layer"])
def test_speech_branch_reproduces_stock_wav2vec2(feat_extract_norm):
    audio_config = tiny_audio_config(feat_extract_norm=feat_extract_norm,
                                     do_stable_layer_norm=feat_extract_norm == "layer")
    encoder = SpeechEncoder(tiny_config(audio_config=audio_config), audio_config).eval()
    # The group-norm encoder must be running our MaskedGroupNorm, or this would compare stock with stock.
    assert (encoder.first_norm is not None) == (feat_extract_norm == "group")
    stock = AutoModel.from_config(audio_config).eval()
    waveform = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 4000)).astype(np.float32))
    with torch.no_grad():
        before_loading = stock(waveform).last_hidden_state
    # Same parameter names both ways: the masked norm is a drop-in that a stock checkpoint loads into.
    loaded = stock.load_state_dict(encoder.model.state_dict(), strict=False)
    assert loaded.missing_keys == [] and loaded.unexpected_keys == []
    with torch.no_grad():
        frames, frame_mask = encoder(waveform, torch.ones_like(waveform, dtype=torch.long))
        reference = stock(waveform).last_hidden_state
    assert not torch.allclose(before_loading, reference)  # the equality below comes from the copied weights
    torch.testing.assert_close(frames, reference, atol=0, rtol=0)
    assert frame_mask.all() and frame_mask.shape == reference.shape[:2]


def test_receptive_field_of_wav2vec2_base():
    assert receptive_field(tiny_audio_config(conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
                                             conv_dim=(8,) * 7)) == 400


# --- bad input ---------------------------------------------------------------------------------------------------

def test_mismatched_batch_sizes_are_refused(processor):
    model = MERForSequenceClassification(tiny_config()).eval()
    batch = random_batch(processor)
    batch["input_values"] = torch.cat([batch["input_values"]] * 2)
    batch["audio_attention_mask"] = torch.cat([batch["audio_attention_mask"]] * 2)
    with pytest.raises(ValueError, match="batch sizes must match"):
        model(**batch)


def test_inputs_that_bypass_the_processor_stay_finite_and_leave_other_examples_alone(processor):
    """forward reads no tensor values (no host sync), so it cannot refuse an empty transcript or a clip shorter
    than the receptive field; the processor and pipeline do. Such an example gets a finite output, and the
    valid examples of its batch get exactly what they get alone."""
    with pytest.raises(ValueError, match="Transcript 1 is empty"):
        processor(text=["fine", "   "], audio=[np.zeros(4000), np.zeros(4000)])
    model = MERForSequenceClassification(tiny_config()).eval()
    batch = random_batch(processor, lengths=(4000, 30))  # 30 samples: fewer than the 60-sample receptive field
    batch["attention_mask"][1] = 0  # and no transcript tokens either
    with torch.no_grad():
        logits = model(**batch).logits
        alone = model(**random_batch(processor, lengths=(4000,), texts=("i am so happy today, it is wonderful",))).logits
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits[0], alone[0], atol=1e-5, rtol=1e-5)


def test_forward_and_backward_make_no_host_sync(processor, monkeypatch):
    """No .item(), .tolist(), .nonzero() or Python branch on a tensor value in the project's own forward code
    (transformers' encoders keep theirs: they skip them under torch.compile)."""
    import modeling_mer

    root = str(Path(modeling_mer.__file__).parent)

    def refuse_in_project_code(name, original):
        def guarded(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(root):
                raise AssertionError(f"host sync: Tensor.{name} called from {caller}:{sys._getframe(1).f_lineno}")
            return original(self, *args, **kwargs)
        return guarded

    model = MERForSequenceClassification(tiny_config()).train()
    batch = random_batch(processor, lengths=(4000, 1500, 2500, 3000), texts=("a b c", "no", "yes it is", "fine"))
    for name in ("item", "tolist", "nonzero", "__bool__"):
        monkeypatch.setattr(torch.Tensor, name, refuse_in_project_code(name, getattr(torch.Tensor, name)))
    output = model(**batch, labels=torch.tensor([0, 1, 0, 1]))
    output.loss.backward()
    monkeypatch.undo()
    assert torch.isfinite(output.loss) and output.triplet_loss > 0


def test_missing_modality_is_refused(processor):
    model = MERForSequenceClassification(tiny_config()).eval()
    batch = random_batch(processor)
    with pytest.raises(ValueError, match="needs `input_values`"):
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])


def test_label2id_contradicting_id2label_is_refused():
    with pytest.raises(ValueError, match=r"label2id=.*contradicts id2label.*'sad': 0.*Pass only id2label"):
        tiny_config(id2label={0: "happy", 1: "sad"}, label2id={"happy": 1, "sad": 0})
    with pytest.raises(ValueError, match=r"contradicts id2label.*missing names: \['sad'\]"):
        tiny_config(id2label={0: "happy", 1: "sad"}, label2id={"happy": 0})
    config = tiny_config(id2label={0: "happy", 1: "sad"}, label2id={"happy": 0, "sad": 1})
    assert config.label2id == {"happy": 0, "sad": 1}
