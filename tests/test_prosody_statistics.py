"""ProsodyStatistics: pitch, voicing and energy checked against closed forms; padding changes nothing."""

import numpy as np
import pytest
import torch
from tiny_models import random_batch, tiny_config, tiny_processor

from modeling_mer import MERForSequenceClassification
from modeling_mer.configuration_mer import SAMPLING_RATE
from modeling_mer.prosody_statistics_mer import ProsodyStatistics, masked_statistics

WINDOW, HOP = 400, 320  # wav2vec2-base framing


@pytest.fixture(scope="module")
def statistics():
    return ProsodyStatistics(tiny_config(num_mel_bins=16, num_mfcc=8), WINDOW, HOP).eval()


def harmonic_tone(f0, seconds=0.5, amplitude=0.3):
    t = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    wave = sum(amplitude / k * np.sin(2 * np.pi * k * f0 * t) for k in (1, 2, 3))
    return torch.tensor(wave, dtype=torch.float32)[None]


@pytest.mark.parametrize("f0", [90.0, 150.0, 220.0, 330.0])
def test_pitch_of_a_harmonic_tone(statistics, f0):
    features = statistics.frame_features(harmonic_tone(f0))
    semitones = features[0, :, 1] * 12  # stored as octaves
    # The autocorrelation peak sits at an integer lag: at 16 kHz that is within 0.4 semitones up to 330 Hz.
    assert (semitones - 12 * np.log2(f0 / 55.0)).abs().max() < 0.4
    assert features[0, :, 2].min() > 0.8  # strongly voiced


def test_noise_is_unvoiced_and_energy_is_the_mean_square_in_db(statistics):
    noise = torch.from_numpy(np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1)[None]
    features = statistics.frame_features(noise)
    assert features[0, :, 2].mean() < 0.4
    frames = noise[0].numpy()[: (8000 - WINDOW) // HOP * HOP + WINDOW]
    expected = [10 * np.log10(np.mean((f - f.mean()) ** 2) + 1e-10)
                for f in np.lib.stride_tricks.sliding_window_view(frames, WINDOW)[::HOP]]
    np.testing.assert_allclose(features[0, :, 0].numpy() * 10, expected, atol=1e-3)


def test_masked_statistics_match_numpy_on_the_valid_frames():
    values = torch.randn(2, 7, 3)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0], [1] * 7], dtype=torch.float32)
    result = masked_statistics(values, mask)
    first = values[0, :4].numpy()
    np.testing.assert_allclose(result[0].numpy(), np.concatenate([first.mean(0), first.std(0)]), atol=1e-5)


def test_model_with_statistics_is_padding_invariant_and_trains_them():
    processor = tiny_processor()
    model = MERForSequenceClassification(tiny_config(use_prosody_statistics=True)).eval()
    batch = random_batch(processor, lengths=(4000, 1500))
    alone = random_batch(processor, lengths=(1500,), texts=("no",), seed=0)
    alone["input_values"] = batch["input_values"][1:, :1500]
    with torch.no_grad():
        padded = model(**batch).logits
        single = model(**alone).logits
    torch.testing.assert_close(padded[1], single[0], atol=1e-5, rtol=1e-5)
    model.train()
    model(**batch, labels=torch.tensor([0, 1])).loss.backward()
    assert model.mer.prosody_statistics.projection[0].weight.grad.abs().sum() > 0


def test_the_option_is_validated():
    with pytest.raises(ValueError, match="use_prosody_statistics='yes' is invalid: expected True or False"):
        tiny_config(use_prosody_statistics="yes")
