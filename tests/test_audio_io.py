"""load_audio and resample, checked against analytic sines and numpy's FFT (no shared code)."""

import io

import numpy as np
import pytest
import soundfile as sf
import torch

from modeling_mer.audio_io_mer import load_audio, resample


def _sine(freq, rate, seconds=1.0, amplitude=0.5, phase=0.3):
    t = np.arange(int(round(seconds * rate))) / rate
    return amplitude * np.sin(2 * np.pi * freq * t + phase)


def _peak(signal, rate):
    """(frequency, amplitude) of the strongest FFT bin of a Hann-windowed signal."""
    window = np.hanning(len(signal))
    spectrum = np.abs(np.fft.rfft(signal * window))
    k = int(np.argmax(spectrum))
    return k * rate / len(signal), 2 * spectrum[k] / window.sum()


@pytest.mark.parametrize("orig_rate", [8000, 11025, 22050, 44100, 48000])
def test_resampled_sine_matches_the_analytic_sine(orig_rate):
    out = resample(_sine(1000, orig_rate), orig_rate, 16000)
    assert out.dtype == np.float32
    assert len(out) == int(np.ceil(orig_rate * 1.0 * 16000 / orig_rate))
    reference = _sine(1000, 16000, seconds=len(out) / 16000)
    interior = slice(200, -200)  # the edges see zero padding
    assert np.max(np.abs(out[interior] - reference[interior])) < 2e-3
    freq, amplitude = _peak(out, 16000)
    assert freq == pytest.approx(1000, abs=1.0)
    assert amplitude == pytest.approx(0.5, rel=0.01)


def test_downsampling_removes_content_above_the_new_nyquist():
    # 10 kHz is above 8 kHz: a naive decimator would alias it to 6 kHz at full strength.
    out = resample(_sine(10000, 44100), 44100, 16000)
    assert np.sqrt(np.mean(out[200:-200] ** 2)) < 0.01 * 0.5 / np.sqrt(2)
    # while a tone at 7 kHz (inside the 0.99 * Nyquist pass band) keeps its amplitude.
    kept = resample(_sine(7000, 44100), 44100, 16000)
    assert _peak(kept, 16000)[1] == pytest.approx(0.5, rel=0.02)


def test_resample_keeps_torch_type_and_batch_shape():
    batch = torch.from_numpy(np.stack([_sine(440, 48000), _sine(880, 48000)])).float()
    out = resample(batch, 48000, 16000)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 16000)
    single = resample(batch[1].numpy(), 48000, 16000)
    np.testing.assert_allclose(out[1].numpy(), single, atol=1e-6)
    assert resample(batch, 16000, 16000).shape == batch.shape


def _wav_bytes(data, rate, subtype="PCM_16"):
    buffer = io.BytesIO()
    sf.write(buffer, data, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def test_every_source_type_gives_the_same_16k_mono_waveform(tmp_path):
    wave = _sine(440, 16000, seconds=0.5)
    path = tmp_path / "a.wav"
    sf.write(path, wave, 16000, subtype="FLOAT")
    expected = wave.astype(np.float32)
    sources = [
        str(path), path, path.read_bytes(), wave, torch.from_numpy(wave), {"array": wave, "sampling_rate": 16000},
        {"bytes": path.read_bytes(), "path": "ignored.wav"}, {"bytes": None, "path": str(path)},
    ]
    for source in sources:
        out = load_audio(source)
        assert out.dtype == np.float32 and out.ndim == 1
        np.testing.assert_allclose(out, expected, atol=1e-6)


def test_stereo_44k_file_is_mixed_and_resampled(tmp_path):
    left, right = _sine(440, 44100, amplitude=0.6), _sine(440, 44100, amplitude=0.2)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 44100, subtype="FLOAT")
    out = load_audio(path)
    assert len(out) == 16000
    freq, amplitude = _peak(out, 16000)
    assert freq == pytest.approx(440, abs=1.0)
    assert amplitude == pytest.approx(0.4, rel=0.01)  # mean of the two channels


def test_arrays_with_channels_and_integer_pcm():
    wave = _sine(300, 8000, amplitude=0.5)
    channels_first = np.stack([wave, np.zeros_like(wave)])
    out = load_audio(channels_first, sampling_rate=8000)
    assert len(out) == 16000
    assert _peak(out, 16000)[1] == pytest.approx(0.25, rel=0.01)
    np.testing.assert_allclose(load_audio(channels_first.T, sampling_rate=8000), out, atol=1e-6)
    pcm = (wave * 32768).astype(np.int16)
    np.testing.assert_allclose(load_audio(pcm, sampling_rate=16000), pcm / 32768.0, atol=1e-6)


@pytest.mark.parametrize(
    "source, kwargs, error, message",
    [
        ("/nowhere/x.wav", {}, FileNotFoundError, "x.wav.*not found"),
        (b"", {"name": "item 3"}, ValueError, "item 3.*empty"),
        (b"RIFF1234WAVEjunk" * 4, {"name": "item 3"}, ValueError, "item 3.*could not decode.*sox"),
        (np.zeros(0), {"name": "item 3"}, ValueError, "item 3.*empty"),
        (np.array([0.1, np.nan, 0.2]), {"name": "item 3"}, ValueError, "item 3.*1 NaN/inf"),
        (np.array([0.1, np.inf]), {}, ValueError, "NaN/inf"),
        (np.ones(10), {"sampling_rate": 0}, ValueError, "positive integer"),
        (np.ones(10), {"sampling_rate": -16000}, ValueError, "positive integer"),
        ({"array": np.ones(10), "sampling_rate": 44100.5}, {}, ValueError, "positive integer"),
        ({"array": np.ones(10)}, {"name": "item 3"}, ValueError, "item 3.*sampling_rate"),
        ({"path": None, "bytes": None}, {}, ValueError, "neither"),
        (np.ones((2, 2, 2)), {}, ValueError, "shape"),
        (3.5, {}, ValueError, "unsupported"),
    ],
)
def test_bad_inputs_name_the_item_and_the_fix(source, kwargs, error, message):
    with pytest.raises(error, match=message):
        load_audio(source, **kwargs)


def test_bad_files_name_the_path(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.wav.*0 bytes"):
        load_audio(empty)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(_wav_bytes(np.zeros(100), 16000)[:20])
    with pytest.raises(ValueError, match="corrupt.wav.*could not decode"):
        load_audio(corrupt)
    silent = tmp_path / "no_samples.wav"
    silent.write_bytes(_wav_bytes(np.zeros(0), 16000))
    with pytest.raises(ValueError, match="no_samples.wav.*0 samples"):
        load_audio({"path": str(silent), "bytes": None})


def test_unsigned_8bit_pcm_is_centred_like_soundfile_reads_it():
    """8-bit WAV holds uint8 offset binary (128 = silence); the array path must agree with soundfile's decoding."""
    wave = _sine(300, 16000, amplitude=0.5)
    pcm = np.clip(np.round(wave * 128 + 128), 0, 255).astype(np.uint8)
    from_array = load_audio(pcm, sampling_rate=16000)
    assert np.all(np.isfinite(from_array))
    np.testing.assert_allclose(from_array, (pcm.astype(np.float64) - 128) / 128, atol=1e-7)
    # Independent reference: soundfile decoding the same samples written as an 8-bit WAV file.
    buffer = io.BytesIO()
    sf.write(buffer, (pcm.astype(np.float64) - 128) / 128, 16000, format="WAV", subtype="PCM_U8")
    np.testing.assert_allclose(load_audio(buffer.getvalue()), from_array, atol=1e-7)


def test_bfloat16_and_float16_tensors_are_accepted():
    wave = torch.from_numpy(_sine(300, 16000, amplitude=0.5).astype(np.float32))
    for dtype in (torch.bfloat16, torch.float16):
        out = load_audio(wave.to(dtype), sampling_rate=16000)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, wave.to(dtype).float().numpy())  # exact: no extra rounding
