"""benchmarks/real_corpora.py: its probe on mer's prosody statistics reads what the model itself computes.

Nothing here trains mer; the benchmark's rows themselves are measurements (README, "Results on real data")."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import Wav2Vec2Config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import real_corpora  # noqa: E402

from modeling_mer import MERConfig, MERForSequenceClassification  # noqa: E402
from modeling_mer.training.experiment import SMALL_SPEECH_ENCODER  # noqa: E402


def spoken_like(seconds, seed=0):
    """A rising tone with a syllable-rate envelope between stretches of silence, at 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(16_000 * seconds)) / 16_000
    tone = np.sin(2 * np.pi * (140 + 30 * t) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 2
    tone[t < 0.6] = 0.0
    return (0.3 * tone + 1e-3 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("seconds,max_seconds", [(5.3, 4), (2.2, 4), (3.0, 15)])
def test_the_probe_reads_the_statistics_the_model_is_given(seconds, max_seconds):
    """The probe's vector equals what an audio-only model with the small speech encoder hands its statistics
    branch for the same clip, cropped as evaluation crops it: same crop, same frame grid, same speech frames."""
    config = MERConfig(modalities=("audio",), audio_config=Wav2Vec2Config(**SMALL_SPEECH_ENCODER),
                       use_prosody_statistics=True)
    model = MERForSequenceClassification(config).eval()
    seen = []
    statistics = model.mer.prosody_statistics.statistics
    model.mer.prosody_statistics.statistics = lambda *inputs: seen.append(statistics(*inputs)) or seen[-1]
    waveform = spoken_like(seconds)
    start = max(0, (len(waveform) - 16_000 * max_seconds) // 2)
    window = torch.from_numpy(waveform[start:start + 16_000 * max_seconds])[None]
    with torch.no_grad():
        model(input_values=window, audio_attention_mask=torch.ones_like(window, dtype=torch.long))
    probe = real_corpora.mer_statistics(waveform, max_seconds=max_seconds)
    assert probe.shape == seen[0][0].shape
    np.testing.assert_allclose(probe, seen[0][0].numpy(), rtol=1e-5, atol=1e-5)
    # Not a constant: another clip gives other statistics.
    assert not np.allclose(probe, real_corpora.mer_statistics(spoken_like(seconds, seed=1) * 0.3, max_seconds))
