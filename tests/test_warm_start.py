"""train.py --text_branch_from / --audio_branch_from: a fused model whose two sides start as trained unimodal models."""

import dataclasses

import pytest
import torch

from modeling_mer.training import experiment
from modeling_mer.training.arguments import ModelArguments

LABELS = ["neutral", "happy", "sad", "angry"]
SMALL = dict(d_model=16, num_crossmodal_layers=1, num_attention_heads=2, prosody_hidden_size=16, num_mel_bins=16,
             num_mfcc=8, mfcc_lstm_layers=1, embedding_size=12, use_prosody_statistics=True)


def save_unimodal(folder, modality, seed):
    """A unimodal model built as train.py builds it, its weights moved off their initial values (as training
    would), so that a weight equal to it in the fused model can only have been copied."""
    torch.manual_seed(seed)
    model, processor = experiment.build_model(ModelArguments(modalities=modality, **SMALL), LABELS)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def unimodal(tmp_path_factory):
    root = tmp_path_factory.mktemp("unimodal")
    return {modality: (root / modality, save_unimodal(root / modality, modality, seed))
            for seed, modality in enumerate(("text", "audio"))}


def test_each_side_of_the_fused_model_starts_as_its_unimodal_model(unimodal):
    (text_dir, text_model), (audio_dir, audio_model) = unimodal["text"], unimodal["audio"]
    args = ModelArguments(text_branch_from=str(text_dir), audio_branch_from=str(audio_dir), **SMALL)
    experiment.check_warm_start(args)
    fused = experiment.build_model(args, LABELS)[0].mer
    text, audio = text_model.mer, audio_model.mer
    pairs = {
        # the crossmodal transformer each side's positions query with <- that side's own unimodal transformer
        "audio_to_text": (fused.audio_to_text, text.text_to_text),
        "text_to_audio": (fused.text_to_audio, audio.audio_to_audio),
        "text_self_attention": (fused.text_self_attention, text.text_self_attention),
        "audio_self_attention": (fused.audio_self_attention, audio.audio_self_attention),
        "text_projection": (fused.text_projection, text.text_projection),
        "audio_projection": (fused.audio_projection, audio.audio_projection),
        "speech_encoder": (fused.speech_encoder, audio.speech_encoder),
        "prosody_statistics": (fused.prosody_statistics, audio.prosody_statistics),
        "text_encoder": (fused.text_encoder, text.text_encoder),
    }
    for name, (mine, theirs) in pairs.items():
        theirs = theirs.state_dict()
        for key, value in mine.state_dict().items():
            assert torch.equal(value, theirs[key]), f"{name}.{key} was not copied"
    # The fusion head is new: its input is both sides' pooled vectors, which no unimodal model has.
    assert fused.embedding.in_features == 3 * SMALL["d_model"]


def test_a_warm_started_model_still_trains_every_side(unimodal):
    (text_dir, _), (audio_dir, _) = unimodal["text"], unimodal["audio"]
    args = ModelArguments(text_branch_from=str(text_dir), audio_branch_from=str(audio_dir), freeze_text_encoder=True,
                          **SMALL)
    model = experiment.build_model(args, LABELS)[0]
    trainable = {name.split(".")[1] for name, parameter in model.named_parameters()
                 if parameter.requires_grad and name.startswith("mer.")}
    # This run's freezing holds (the demo recipe's: MiniLM frozen); the rest trains, the copied sides included.
    assert "text_encoder" not in trainable
    assert {"audio_to_text", "text_to_audio", "speech_encoder", "prosody_statistics", "embedding"} <= trainable


def test_warm_start_refusals_name_the_flag_and_the_fix(unimodal, tmp_path):
    (text_dir, _), (audio_dir, _) = unimodal["text"], unimodal["audio"]
    args = ModelArguments(text_branch_from=str(text_dir), audio_branch_from=str(audio_dir), **SMALL)
    with pytest.raises(ValueError, match=r"--audio_branch_from .* is a model of modalities=\('text',\); it must be "
                                         r"a single-modality audio model"):
        experiment.check_warm_start(dataclasses.replace(args, audio_branch_from=str(text_dir)))
    with pytest.raises(ValueError, match="pass --modalities text,audio"):
        experiment.check_warm_start(dataclasses.replace(args, modalities="audio"))
    with pytest.raises(ValueError, match="use one or the other"):
        experiment.check_warm_start(dataclasses.replace(args, init_from=str(text_dir)))
    with pytest.raises(ValueError, match="--text_branch_from .*no trained MER model there"):
        experiment.check_warm_start(dataclasses.replace(args, text_branch_from=str(tmp_path / "missing")))
    # Checked before any weight is copied into a model that cannot hold it: another width fails, naming a weight.
    with pytest.raises(ValueError, match=r"--text_branch_from .* does not fit this model: mer\.text_projection\."
                                         r"weight has shape \(32, 384\) but the checkpoint's .* is \(16, 384\)"):
        experiment.build_model(dataclasses.replace(args, d_model=32), LABELS)
