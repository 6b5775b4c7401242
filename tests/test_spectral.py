"""The spectral front end (spectral_mer.py) against independent computations.

The model's other tests only see log-mel and MFCC through a CNN and a BiLSTM, so a wrong filter bank, DCT or
framing would still pass them; these tests pin each piece to numpy/transformers.audio_utils or a closed form.
"""

import math

import numpy as np
import pytest
import torch
from tiny_models import tiny_audio_config, tiny_config
from transformers import AutoConfig, Wav2Vec2Model, audio_utils

from modeling_mer.configuration_mer import SAMPLING_RATE
from modeling_mer.encoders_mer import ProsodyBranch, receptive_field
from modeling_mer.spectral_mer import SpectralFeatures, dct_matrix, mel_filter_bank

# wav2vec2-base framing: 25 ms window, 20 ms hop, next power of two for the FFT.
WINDOW, HOP, N_FFT, MELS, MFCCS = 400, 320, 512, 64, 40


def htk_mel_centres_hz(num_mel_bins, f_max=SAMPLING_RATE / 2):
    """Closed form: filter centres equally spaced on the HTK mel scale m = 2595 log10(1 + f / 700)."""
    mel_max = 2595.0 * math.log10(1.0 + f_max / 700.0)
    mel_points = np.linspace(0.0, mel_max, num_mel_bins + 2)
    return 700.0 * (10.0 ** (mel_points / 2595.0) - 1.0)


@pytest.fixture(scope="module")
def spectral():
    return SpectralFeatures(MELS, MFCCS, SAMPLING_RATE, WINDOW, HOP, N_FFT)


def test_mel_filters_match_audio_utils_and_the_htk_closed_form():
    ours = mel_filter_bank(MELS, N_FFT, SAMPLING_RATE).numpy()
    reference = audio_utils.mel_filter_bank(num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=MELS,
                                            min_frequency=0.0, max_frequency=SAMPLING_RATE / 2,
                                            sampling_rate=SAMPLING_RATE, norm=None, mel_scale="htk")
    np.testing.assert_allclose(ours, reference, atol=1e-6)

    # Triangles on the HTK grid, computed here from the formula: each rises from the previous centre to its own
    # and falls to the next one, peak 1 (no area normalisation).
    points = htk_mel_centres_hz(MELS)
    bins_hz = np.linspace(0.0, SAMPLING_RATE / 2, N_FFT // 2 + 1)[:, None]
    rising = (bins_hz - points[:-2]) / (points[1:-1] - points[:-2])
    falling = (points[2:] - bins_hz) / (points[2:] - points[1:-1])
    np.testing.assert_allclose(ours, np.clip(np.minimum(rising, falling), 0.0, None), atol=1e-6)
    # Neighbouring triangles share edges, so between the first and last centre the filters sum to 1.
    inside = (bins_hz[:, 0] >= points[1]) & (bins_hz[:, 0] <= points[-2])
    np.testing.assert_allclose(ours[inside].sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize("frequency", [300.0, 1000.0, 3500.0])
def test_a_sine_lands_in_the_mel_bin_centred_on_its_frequency(spectral, frequency):
    time = np.arange(SAMPLING_RATE) / SAMPLING_RATE
    sine = torch.tensor(np.sin(2 * np.pi * frequency * time), dtype=torch.float32)[None]
    log_mel, _ = spectral(sine)
    loudest = int(log_mel[0].mean(0).argmax())
    centres = htk_mel_centres_hz(MELS)[1:-1]
    assert loudest == int(np.abs(centres - frequency).argmin()), (loudest, centres[loudest], frequency)


def test_log_mel_matches_audio_utils_spectrogram(spectral):
    waveform = np.random.default_rng(0).standard_normal(SAMPLING_RATE).astype(np.float32) * 0.1
    log_mel, _ = spectral(torch.from_numpy(waveform)[None])
    # numpy framing (no centring: frames start at sample 0, like the conv encoder), periodic Hann, power 2.
    power_mel = audio_utils.spectrogram(
        waveform, audio_utils.window_function(WINDOW, "hann", periodic=True), frame_length=WINDOW,
        hop_length=HOP, fft_length=N_FFT, power=2.0, center=False,
        mel_filters=audio_utils.mel_filter_bank(num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=MELS,
                                                min_frequency=0.0, max_frequency=SAMPLING_RATE / 2,
                                                sampling_rate=SAMPLING_RATE, norm=None, mel_scale="htk"),
        mel_floor=0.0, dtype=np.float64,
    )  # (mels, frames)
    expected = np.log(power_mel.T + 1e-6)
    assert log_mel.shape[1:] == expected.shape
    np.testing.assert_allclose(log_mel[0].numpy(), expected, atol=1e-4, rtol=1e-5)


def test_dct_is_the_orthonormal_dct_ii():
    full = dct_matrix(MELS, MELS).double().numpy()
    np.testing.assert_allclose(full.T @ full, np.eye(MELS), atol=1e-6)  # orthonormal: invertible, energy-keeping
    values = np.random.default_rng(1).standard_normal((5, MELS))
    scipy_fft = pytest.importorskip("scipy.fft")
    np.testing.assert_allclose(values @ dct_matrix(MFCCS, MELS).double().numpy(),
                               scipy_fft.dct(values, type=2, norm="ortho", axis=-1)[:, :MFCCS], atol=1e-6)


def test_mfcc_is_the_dct_of_the_log_mel(spectral):
    scipy_fft = pytest.importorskip("scipy.fft")
    waveform = torch.randn(2, 8000) * 0.1
    log_mel, mfcc = spectral(waveform)
    expected = scipy_fft.dct(log_mel.double().numpy(), type=2, norm="ortho", axis=-1)[..., :MFCCS]
    np.testing.assert_allclose(mfcc.numpy(), expected, atol=1e-3, rtol=1e-5)


def test_frame_t_covers_exactly_the_samples_of_encoder_frame_t(spectral):
    # One non-zero sample at s: only the frames whose window [t * hop, t * hop + window) holds s see energy.
    # (Not at a multiple of the hop: the periodic Hann window is exactly 0 at a frame's first sample.)
    for sample in (1, 319, 321, 399, 401, 4321):
        impulse = torch.zeros(1, 6000)
        impulse[0, sample] = 1.0
        log_mel, _ = spectral(impulse)
        lit = (log_mel[0] > math.log(1e-6) + 1e-3).any(-1).nonzero().flatten().tolist()
        assert lit == [t for t in range(log_mel.shape[1]) if t * HOP <= sample < t * HOP + WINDOW], sample


@pytest.mark.parametrize("audio_config", [
    tiny_audio_config(),  # kernels (10, 3, 3), strides (5, 4, 4)
    # wav2vec2-base's conv layout, narrow channels so the test stays fast
    AutoConfig.for_model("wav2vec2", hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16, conv_dim=(8,) * 7, num_conv_pos_embeddings=16,
                         num_conv_pos_embedding_groups=2),
], ids=["tiny", "wav2vec2-base-conv"])
def test_frame_count_equals_the_conv_encoders(audio_config):
    encoder = Wav2Vec2Model(audio_config).eval()
    branch = ProsodyBranch(tiny_config(audio_config=audio_config), audio_config)
    assert branch.spectral.window_length == receptive_field(audio_config)
    assert branch.spectral.hop_length == math.prod(audio_config.conv_stride)
    field = receptive_field(audio_config)
    lengths = [field, field + 1, field + branch.spectral.hop_length - 1, field + branch.spectral.hop_length,
               3 * field + 7, 16_000]
    expected = encoder._get_feat_extract_output_lengths(torch.tensor(lengths)).tolist()
    assert branch.spectral.num_frames(torch.tensor(lengths)).tolist() == expected
    for length, frames in zip(lengths, expected, strict=True):
        log_mel, mfcc = branch.spectral(torch.randn(1, length))
        with torch.no_grad():
            encoder_frames = encoder.feature_extractor(torch.randn(1, length)).shape[-1]
        assert log_mel.shape[1] == mfcc.shape[1] == encoder_frames == frames, length
