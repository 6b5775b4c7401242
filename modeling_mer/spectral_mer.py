"""Log-mel spectrogram and MFCC in plain torch, framed exactly like the wav2vec2 feature encoder.

wav2vec2's convolutional encoder has a 400-sample (25 ms) receptive field and a 320-sample (20 ms) stride at
16 kHz; a stack of unpadded convolutions yields exactly the windows [t * stride, t * stride + field) that fit in
the signal. Using that window and hop here makes spectral frame t cover the same samples as encoder frame t, so
one frame mask serves all three speech branches. (CA-MSER used a 40 ms window and 10 ms hop for its MFCCs; we
trade that finer hop for exact alignment.)
"""

import math

import torch
from torch import nn
from transformers import audio_utils


def mel_filter_bank(num_mel_bins, n_fft, sampling_rate, f_min=0.0, f_max=None):
    """Triangular HTK-mel filters without area normalisation (peak 1), shape (n_fft // 2 + 1, num_mel_bins)."""
    filters = audio_utils.mel_filter_bank(
        num_frequency_bins=n_fft // 2 + 1, num_mel_filters=num_mel_bins, min_frequency=f_min,
        max_frequency=f_max or sampling_rate / 2, sampling_rate=sampling_rate, norm=None, mel_scale="htk",
    )
    return torch.from_numpy(filters).float()


def dct_matrix(num_mfcc, num_mel_bins):
    """Orthonormal DCT-II basis, shape (num_mel_bins, num_mfcc): mfcc = log_mel @ dct."""
    n = torch.arange(num_mel_bins, dtype=torch.float64)
    k = torch.arange(num_mfcc, dtype=torch.float64)
    basis = torch.cos(math.pi / num_mel_bins * (n[:, None] + 0.5) * k[None, :]) * math.sqrt(2.0 / num_mel_bins)
    basis[:, 0] /= math.sqrt(2.0)
    return basis.float()


class SpectralFeatures(nn.Module):
    """waveform (B, L) -> log-mel (B, T, num_mel_bins) and MFCC (B, T, num_mfcc), T = floor((L - window) / hop) + 1."""

    def __init__(self, num_mel_bins=64, num_mfcc=40, sampling_rate=16_000, window_length=400, hop_length=320,
                 n_fft=512):
        super().__init__()
        self.window_length = window_length
        self.hop_length = hop_length
        self.n_fft = n_fft
        self.num_mel_bins = num_mel_bins
        self.num_mfcc = num_mfcc
        self.sampling_rate = sampling_rate
        # Derived from the config, so not saved in checkpoints; `_init_weights` refills them after a meta-device
        # load (transformers 5 builds models on the meta device and only restores saved tensors).
        for name, value in self.buffer_values().items():
            self.register_buffer(name, value, persistent=False)

    def buffer_values(self):
        return {
            "window": torch.hann_window(self.window_length, periodic=True),
            "mel_filters": mel_filter_bank(self.num_mel_bins, self.n_fft, self.sampling_rate),
            "dct": dct_matrix(self.num_mfcc, self.num_mel_bins),
        }

    def num_frames(self, num_samples):
        return torch.div(num_samples - self.window_length, self.hop_length, rounding_mode="floor") + 1

    def forward(self, waveform):
        # Spectra in float32 even under bf16 autocast or in a model cast to bf16 (buffers included): the log of
        # tiny powers is not representable in bf16.
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            frames = waveform.float().unfold(-1, self.window_length, self.hop_length)  # (B, T, 400)
            spectrum = torch.fft.rfft(frames * self.window.float(), n=self.n_fft)  # (B, T, n_fft // 2 + 1)
            power = spectrum.real.square() + spectrum.imag.square()
            log_mel = torch.log(power @ self.mel_filters.float() + 1e-6)  # (B, T, num_mel_bins)
            mfcc = log_mel @ self.dct.float()  # (B, T, num_mfcc)
        return log_mel, mfcc
