"""Tiny saved folders for the inference tests: a MER checkpoint, a constant-output ASR model, WAV files."""

import json

import numpy as np
import soundfile
import torch
from tiny_models import tiny_audio_config, tiny_config, tiny_processor
from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC, Wav2Vec2Processor

from modeling_mer import MERForSequenceClassification

ASR_WORD = "a"  # what the tiny recognizer always hears


def tiny_model(seed=0, **config_overrides):
    """A random tiny classifier whose logits are spread out (x50), so that score comparisons mean something."""
    torch.manual_seed(seed)
    model = MERForSequenceClassification(tiny_config(**config_overrides)).eval()
    with torch.no_grad():
        model.classifier[-1].weight.mul_(50)
    return model


def save_tiny_model(folder, seed=0, **config_overrides):
    """Save a tiny model + processor as a trained model folder would hold them; returns the model."""
    model = tiny_model(seed, **config_overrides)
    model.save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    return model


def save_tiny_asr(folder):
    """A CTC model whose head always predicts the letter ASR_WORD: every clip transcribes to it."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, ASR_WORD: 3, "b": 4}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), pad_token="<pad>", unk_token="<unk>",
                                     word_delimiter_token="|")
    processor = Wav2Vec2Processor(feature_extractor=Wav2Vec2FeatureExtractor(return_attention_mask=True),
                                  tokenizer=tokenizer)
    model = Wav2Vec2ForCTC(tiny_audio_config(vocab_size=len(vocab), pad_token_id=0))
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.bias.zero_()
        model.lm_head.bias[vocab[ASR_WORD]] = 10.0
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def waveform(samples, seed=0):
    return (np.random.default_rng(seed).standard_normal(samples) * 0.1).astype(np.float32)


def write_wav(path, samples_or_array, sampling_rate=16_000, seed=0):
    """A float WAV (exact round trip of float32 samples)."""
    array = waveform(samples_or_array, seed) if isinstance(samples_or_array, int) else samples_or_array
    soundfile.write(path, array, sampling_rate, subtype="FLOAT")
    return path
