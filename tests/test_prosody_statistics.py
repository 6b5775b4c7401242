"""ProsodyStatistics: pitch, voicing and energy checked against closed forms; padding changes nothing."""

import numpy as np
import pytest
import torch
from tiny_models import random_batch, tiny_config, tiny_processor

from modeling_mer import MERForSequenceClassification
from modeling_mer.configuration_mer import SAMPLING_RATE
from modeling_mer.prosody_statistics_mer import SPEECH_RANGE_DB, ProsodyStatistics, masked_statistics

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


def weighted_statistics(values, weights):
    weights = weights[:, None]
    mean = (values * weights).sum(0) / weights.sum()
    return np.concatenate([mean, np.sqrt(((values - mean) ** 2 * weights).sum(0) / weights.sum())])


def test_statistics_match_numpy_over_speech_frames_and_their_changes(statistics):
    # A tone, a pause, a louder tone, then a quiet hiss more than SPEECH_RANGE_DB below the loudest frame.
    rng = np.random.default_rng(1)
    pause, hiss = np.zeros(3200, np.float32), rng.standard_normal(4000).astype(np.float32) * 1e-4
    waveform = torch.cat([harmonic_tone(140.0)[0], torch.from_numpy(pause), harmonic_tone(210.0, amplitude=0.6)[0],
                          torch.from_numpy(hiss)])[None]
    features = statistics.frame_features(waveform)[0].numpy().astype(np.float64)
    frames = features.shape[0]
    result = statistics.statistics(waveform, torch.ones(1, frames))[0].numpy()

    energy_db = features[:, 0] * 10
    speech = energy_db >= energy_db.max() - SPEECH_RANGE_DB
    assert 0 < (~speech).sum() < frames  # the pause and the hiss are left out, the tones kept
    pitch = weighted_statistics(features[:, 1:2], speech * features[:, 2] ** 2)
    others = weighted_statistics(np.delete(features, 1, axis=1), speech.astype(float))
    pairs = speech[1:] & speech[:-1]
    dynamics = weighted_statistics(np.abs(np.diff(features, axis=0)), pairs.astype(float))
    np.testing.assert_allclose(result, np.concatenate([pitch, others, dynamics]), rtol=1e-4, atol=1e-4)


def test_leading_silence_barely_moves_the_statistics(statistics):
    tone = harmonic_tone(180.0)
    padded = torch.cat([torch.zeros(1, 16_000), tone], dim=1)  # one second of silence first, as in acted corpora

    def summary(waveform):
        frames = statistics.frame_features(waveform).shape[1]
        return statistics.statistics(waveform, torch.ones(1, frames))[0]

    alone, with_silence = summary(tone), summary(padded)
    # Mean energy (in tens of dB) and mean pitch: the silent second would pull the energy mean down by about
    # 40 dB if it counted; only the one frame that straddles the onset differs.
    mean_energy, mean_pitch = 2, 0
    assert abs(with_silence[mean_energy] - alone[mean_energy]) * 10 < 1.5
    assert abs(with_silence[mean_pitch] - alone[mean_pitch]) * 12 < 0.3


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
