"""Training-time waveform augmentation: measured SNR, noise colour, speed, determinism, flags and their errors."""

import numpy as np
import pytest
import torch
from transformers import Wav2Vec2FeatureExtractor

from modeling_mer.data.augmentation import WaveformAugmentation, add_noise, change_speed, coloured_noise
from modeling_mer.data.collator import MERDataCollator
from modeling_mer.training.arguments import DataArguments

RATE = 16_000


def tone(frequency=220.0, seconds=1.0, amplitude=0.3):
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def dominant_frequency(waveform):
    spectrum = np.abs(np.fft.rfft(waveform * np.hanning(len(waveform))))
    return np.argmax(spectrum) * RATE / len(waveform)


@pytest.mark.parametrize("colour", ["white", "pink"])
@pytest.mark.parametrize("snr_db", [0.0, 20.0])
def test_noise_has_the_asked_signal_to_noise_ratio(colour, snr_db):
    clean = tone()
    noisy = add_noise(clean, snr_db, np.random.default_rng(0), colour)
    noise = noisy.astype(np.float64) - clean
    measured = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise ** 2))
    assert abs(measured - snr_db) < 0.05
    assert noisy.dtype == clean.dtype and noisy.shape == clean.shape


def test_pink_noise_falls_3_db_per_octave_and_white_noise_is_flat():
    def octave_drop(noise):  # power in 1-2 kHz over power in 2-4 kHz, in dB (same octave width)
        power = np.abs(np.fft.rfft(noise)) ** 2
        hz = np.fft.rfftfreq(len(noise), 1 / RATE)
        return 10 * np.log10(power[(hz >= 1000) & (hz < 2000)].sum() / power[(hz >= 2000) & (hz < 4000)].sum())

    rng = np.random.default_rng(0)
    # An octave holds twice the bins of the one below: white noise is 3 dB *weaker* per lower octave, pink equal.
    assert abs(octave_drop(coloured_noise(2 ** 18, rng, "white")) + 3.01) < 0.2
    assert abs(octave_drop(coloured_noise(2 ** 18, rng, "pink"))) < 0.2


def test_silence_gets_no_noise():
    silence = np.zeros(1000, dtype=np.float32)
    np.testing.assert_array_equal(add_noise(silence, 10.0, np.random.default_rng(0)), silence)


def test_speed_moves_tempo_and_pitch_together():
    clean = tone(220.0)
    faster = change_speed(clean, 1.1)
    assert len(faster) == round(len(clean) / 1.1)
    assert abs(dominant_frequency(faster) - 242.0) < 3.0
    np.testing.assert_allclose(change_speed(clean, 1.0), clean)


def test_collator_augments_training_views_only_and_reproducibly():
    extractor = Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=False)

    class AudioOnly:  # the collator calls processor(text=None, audio=...) for audio-only batches
        def __call__(self, text, audio, **kwargs):
            return extractor(audio, sampling_rate=RATE, return_tensors="pt", padding=True)

    row = {"audio": {"array": tone(), "sampling_rate": RATE}, "label": 0, "id": "a"}
    augmentation = WaveformAugmentation(speed_range=(0.9, 1.1), noise_probability=1.0, noise_snr_db=(20.0, 20.0))
    training = MERDataCollator(AudioOnly(), training=True, modalities=("audio",), augmentation=augmentation)
    evaluation = MERDataCollator(AudioOnly(), training=False, modalities=("audio",), augmentation=augmentation)
    clean = torch.from_numpy(tone())[None]
    torch.testing.assert_close(evaluation([row])["input_values"], clean)  # evaluation never augments
    first = training([row])["input_values"]
    assert not (first.shape == clean.shape and torch.allclose(first, clean))
    torch.testing.assert_close(training([row])["input_values"], first, rtol=0, atol=0)  # same (seed, epoch, clip)
    training.set_epoch(1)
    second = training([row])["input_values"]
    assert second.shape != first.shape or not torch.equal(second, first)  # a new view next epoch


@pytest.mark.parametrize("flags, message", [
    (dict(speed_perturbation="0.9"), "--speed_perturbation '0.9' is not 'low,high'"),
    (dict(speed_perturbation="0.3,1.1"), "speed_range=.*0.5 <= low"),
    (dict(noise_probability=1.5), "noise_probability=1.5"),
    (dict(noise_snr_db="40,10"), "low <= high"),
])
def test_bad_augmentation_flags_are_named(flags, message):
    with pytest.raises(ValueError, match=message):
        DataArguments(**flags).waveform_augmentation()


def test_augmenting_a_frozen_cached_audio_encoder_is_refused_before_any_work(tmp_path):
    from modeling_mer.training import experiment
    from train import parse_arguments

    model_args, data_args, training_args = parse_arguments([
        "--corpus", "/nonexistent/manifest.csv", "--noise_probability", "0.5", "--freeze_audio_encoder", "true",
        "--output_dir", str(tmp_path / "run")])
    with pytest.raises(ValueError, match="frozen audio encoder"):
        experiment.run(model_args, data_args, training_args)


@pytest.mark.parametrize("frozen, augmented", [("text", True), ("audio", False)])
def test_feature_cache_collator_keeps_the_augmentation_of_what_it_does_not_cache(tmp_path, frozen, augmented):
    """The demo recipe caches its frozen text encoder: the trained speech side must still get augmented views."""
    from tiny_models import tiny_config, tiny_processor

    from modeling_mer import MERForSequenceClassification
    from modeling_mer.training.feature_cache import FeatureCache

    model = MERForSequenceClassification(tiny_config(**{f"freeze_{frozen}_encoder": True}))
    cache = FeatureCache.for_model(model, tiny_processor(), tmp_path)
    augmentation = WaveformAugmentation(noise_probability=1.0)
    training = cache.data_collator(training=True, augmentation=augmentation)
    assert (training.base.augmentation is augmentation) is augmented
    assert cache.data_collator(training=False, augmentation=augmentation).base.augmentation is None
