"""The fusion levers of MERConfig: modality dropout, the auxiliary per-branch loss and late fusion."""

import pytest
import torch
import torch.nn.functional as F
from tiny_models import random_batch, tiny_config, tiny_processor

from modeling_mer import MERConfig, MERForSequenceClassification
from modeling_mer.losses_mer import joint_loss

NO_DROPOUT = dict(attention_dropout=0.0, hidden_dropout=0.0, embedding_dropout=0.0)
TEXTS = ("i am so happy today", "this is very sad news")
OTHER_TEXTS = ("we are so angry today", "that is very good news")  # same token counts as TEXTS


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


def batch_of(processor, texts=TEXTS, seed=0):
    return random_batch(processor, lengths=(3000, 3000), texts=texts, seed=seed)


def test_a_hidden_modality_has_no_influence_on_its_example(processor, monkeypatch):
    torch.manual_seed(0)
    model = MERForSequenceClassification(tiny_config(modality_dropout=0.5, **NO_DROPOUT)).train()
    # Example 0 loses its text, example 1 its audio.
    hidden = (torch.tensor([True, False]), torch.tensor([False, True]))
    monkeypatch.setattr(model.mer, "_hidden_modalities", lambda batch, device: hidden)
    base = batch_of(processor)
    other_text, other_audio = batch_of(processor, texts=OTHER_TEXTS), batch_of(processor, seed=1)
    assert other_text["input_ids"].shape == base["input_ids"].shape

    def logits_of(batch):
        torch.manual_seed(1)  # the encoders' own dropout draws the same masks in each call
        with torch.no_grad():
            return model(**batch).logits

    logits = logits_of(base)
    with_other_text = logits_of({**base, "input_ids": other_text["input_ids"]})
    with_other_audio = logits_of({**base, "input_values": other_audio["input_values"]})
    assert torch.allclose(with_other_text[0], logits[0], atol=1e-6)  # its text was hidden
    assert not torch.allclose(with_other_text[1], logits[1], atol=1e-5)  # its text counts
    assert torch.allclose(with_other_audio[1], logits[1], atol=1e-6)  # its audio was hidden
    assert not torch.allclose(with_other_audio[0], logits[0], atol=1e-5)  # its audio counts


def test_modality_dropout_is_off_in_eval_and_never_hides_both(processor):
    torch.manual_seed(0)
    model = MERForSequenceClassification(tiny_config(modality_dropout=0.6, **NO_DROPOUT))
    hidden_text, hidden_audio = model.mer._hidden_modalities(20_000, torch.device("cpu"))
    assert not (hidden_text & hidden_audio).any()
    assert abs(hidden_text.float().mean().item() - 0.3) < 0.02
    assert abs(hidden_audio.float().mean().item() - 0.3) < 0.02
    base = batch_of(processor)
    model.eval()
    with torch.no_grad():
        changed = model(**{**base, "input_ids": batch_of(processor, texts=OTHER_TEXTS)["input_ids"]}).logits
        assert not torch.allclose(changed, model(**base).logits, atol=1e-5)


def test_auxiliary_loss_is_the_mean_cross_entropy_of_the_branch_heads(processor):
    torch.manual_seed(0)
    config = tiny_config(auxiliary_loss_weight=0.7, use_prosody_statistics=True, **NO_DROPOUT)
    model = MERForSequenceClassification(config).eval()
    labels = torch.tensor([2, 0])
    out = model(**batch_of(processor), labels=labels)
    assert len(out.branch_logits) == 3  # text, audio, prosody statistics
    by_hand = [head[1](vector) for head, vector in zip(model.branch_classifiers, out.branch_embeddings, strict=True)]
    auxiliary = torch.stack([F.cross_entropy(logits, labels) for logits in by_hand]).mean()
    main, _, _ = joint_loss(out.logits, out.embeddings, labels, config.triplet_weight, config.triplet_margin)
    assert torch.allclose(out.auxiliary_loss, auxiliary)
    assert torch.allclose(out.loss, main + 0.7 * auxiliary)
    # Late fusion is off: the logits are the fused classifier's alone.
    assert torch.allclose(out.logits, model.classifier(out.embeddings))


def smoothed_cross_entropy(logits, labels, epsilon):
    """By hand: the target is 1 - epsilon on the label plus epsilon / K on every class."""
    log_p = logits.log_softmax(-1)
    target = torch.full_like(log_p, epsilon / log_p.shape[-1])
    target[torch.arange(len(labels)), labels] += 1 - epsilon
    return -(target * log_p).sum(-1).mean()


def test_label_smoothing_smooths_the_fused_and_the_branch_losses(processor):
    torch.manual_seed(0)
    config = tiny_config(label_smoothing=0.2, auxiliary_loss_weight=0.5, triplet_weight=0.0, **NO_DROPOUT)
    model = MERForSequenceClassification(config).eval()
    labels = torch.tensor([3, 1])
    out = model(**batch_of(processor), labels=labels)
    fused = smoothed_cross_entropy(out.logits, labels, 0.2)
    branches = torch.stack([smoothed_cross_entropy(logits, labels, 0.2) for logits in out.branch_logits]).mean()
    assert torch.allclose(out.ce_loss, fused) and torch.allclose(out.auxiliary_loss, branches)
    assert torch.allclose(out.loss, fused + 0.5 * branches)
    assert not torch.allclose(fused, F.cross_entropy(out.logits, labels))  # it does change the loss


def test_late_fusion_adds_the_branch_logits_to_the_fused_logits(processor):
    torch.manual_seed(0)
    model = MERForSequenceClassification(tiny_config(late_fusion=True, **NO_DROPOUT)).eval()
    out = model(**batch_of(processor), labels=torch.tensor([1, 3]))
    assert out.auxiliary_loss is None and len(out.branch_logits) == 2
    branch_sum = sum(head(vector) for head, vector in zip(model.branch_classifiers, out.branch_embeddings, strict=True))
    assert torch.allclose(out.logits, model.classifier(out.embeddings) + branch_sum, atol=1e-6)


def test_levers_survive_save_and_load(processor, tmp_path):
    torch.manual_seed(0)
    model = MERForSequenceClassification(tiny_config(late_fusion=True, modality_dropout=0.2)).eval()
    model.save_pretrained(tmp_path)
    loaded = MERForSequenceClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.late_fusion and loaded.config.modality_dropout == 0.2
    batch = batch_of(processor)
    with torch.no_grad():
        assert torch.allclose(loaded(**batch).logits, model(**batch).logits, atol=1e-6)


@pytest.mark.parametrize("field, value, message", [
    ("modality_dropout", 1.0, "a probability in"),
    ("modality_dropout", True, "a probability in"),
    ("auxiliary_loss_weight", -0.1, "a number >= 0"),
    ("late_fusion", "yes", "True or False"),
    ("label_smoothing", 1.0, r"a number in \[0, 1\)"),
    ("label_smoothing", -0.1, r"a number in \[0, 1\)"),
])
def test_bad_lever_values_are_refused(field, value, message):
    with pytest.raises(ValueError, match=rf"MERConfig\.{field}=.*{message}"):
        MERConfig(**{field: value})


def test_modality_dropout_needs_two_modalities():
    with pytest.raises(ValueError, match=r"modality_dropout=0\.3.*unimodal"):
        MERConfig(modalities=("audio",), modality_dropout=0.3)
