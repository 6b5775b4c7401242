"""Utterance-level prosody statistics: pitch, voicing, energy and spectral envelope, pooled over speech frames.

Shipped with Hub checkpoints (torch only). A classic acoustic baseline (a logistic regression on F0, energy and
MFCC statistics) beats a speech encoder trained from scratch on a few hundred utterances, because the statistics
state outright what the encoder must first learn to find. This module hands the same statistics to the fusion
head as one more pooled vector beside the branches (`MERConfig.use_prosody_statistics`). Frames are the speech
encoder's own (window = receptive field, hop = total stride), so they share its frame mask.
"""

import math

import torch
from torch import nn

from .configuration_mer import SAMPLING_RATE
from .spectral_mer import SpectralFeatures

F0_MIN_HZ, F0_MAX_HZ = 70.0, 400.0  # the range of adult speaking voices, as in the classic pitch trackers
SILENCE_DB = -100.0  # floor of the frame energy, so log(0) never appears
# Frames more than this far below the utterance's loudest frame are pauses, breath or room noise. Acted corpora
# pad each line with a second of silence; averaged in, it dilutes every statistic (RAVDESS, 4 folds, logistic
# regression on these statistics: 42.2 UA over all frames, 48.6 over speech frames with the dynamics below).
SPEECH_RANGE_DB = 35.0


def masked_statistics(values, weights):
    """Weighted mean and standard deviation over time: values (B, T, F), weights (B, T) -> (B, 2F)."""
    weights = weights.unsqueeze(-1)
    total = weights.sum(1).clamp(min=1e-6)
    mean = (values * weights).sum(1) / total
    variance = ((values - mean.unsqueeze(1)).square() * weights).sum(1) / total
    return torch.cat([mean, variance.clamp(min=0.0).sqrt()], dim=-1)


class ProsodyStatistics(nn.Module):
    """waveform (B, L) + frame mask (B, T) -> a (B, d_model) summary of pitch, voicing, energy and MFCC statistics.

    Per frame: energy in dB, F0 in semitones above 55 Hz from the normalised autocorrelation peak in 70-400 Hz,
    the peak's height (voicing strength, 0-1), and the MFCCs. Only speech frames count (within SPEECH_RANGE_DB of
    the loudest). Pitch statistics are weighted by voicing as well (unvoiced frames have no pitch). Mean and
    spread of each feature, and of how much it changes from one speech frame to the next (its dynamics: a calm
    and an angry line can share a mean pitch but not its movement), standardised per feature over the training
    data (what a classic baseline's scaler does), then a projection.
    """

    def __init__(self, config, window_length, hop_length):
        super().__init__()
        self.spectral = SpectralFeatures(config.num_mel_bins, config.num_mfcc, window_length=window_length,
                                         hop_length=hop_length, n_fft=1 << (window_length - 1).bit_length())
        self.window_length, self.hop_length = window_length, hop_length
        self.min_lag = int(SAMPLING_RATE / F0_MAX_HZ)
        self.max_lag = min(int(SAMPLING_RATE / F0_MIN_HZ), window_length - 1)
        # Mean and spread of (energy, f0, voicing, mfcc), and of their frame-to-frame change.
        num_features = 2 * 2 * (3 + config.num_mfcc)
        # Per-feature standardisation with running training statistics. A LayerNorm across these features would
        # mix decibels, semitones and cepstra in one mean and spread, and lose each feature's absolute level.
        self.norm = nn.BatchNorm1d(num_features, affine=False)
        self.projection = nn.Sequential(nn.Linear(num_features, config.d_model), nn.GELU())

    def frame_features(self, waveform):
        """(B, T, 3 + num_mfcc): energy (dB), f0 (semitones), voicing, MFCC; float32 whatever the model dtype."""
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            samples = waveform.float()
            _, mfcc = self.spectral(samples)
            frames = samples.unfold(-1, self.window_length, self.hop_length)  # (B, T, window)
            frames = frames - frames.mean(-1, keepdim=True)
            energy = frames.square().mean(-1)
            energy_db = (10 * torch.log10(energy + 1e-10)).clamp(min=SILENCE_DB)
            # Autocorrelation through the FFT (zero-padded to twice the window: no circular wrap-around).
            spectrum = torch.fft.rfft(frames, n=2 * self.window_length)
            autocorrelation = torch.fft.irfft(spectrum.real.square() + spectrum.imag.square())[..., :self.window_length]
            # The zero-lag value is the frame's energy (>= 0). A floor rather than an offset: with `+ 1e-10`, ONNX
            # Runtime gave NaN voicing on all-zero (padding) frames, which then poisoned the whole example.
            autocorrelation = autocorrelation / autocorrelation[..., :1].clamp(min=1e-10)
            # The plain (biased) autocorrelation picks the lag: it decays with the lag, so a multiple of the
            # period never wins over the period itself (no octave errors down).
            peak, lag = autocorrelation[..., self.min_lag:self.max_lag + 1].max(-1)
            lag = (lag + self.min_lag).float()
            f0_semitones = 12 * torch.log2(SAMPLING_RATE / lag / 55.0)
            # Voicing is the peak undone of that decay, (N - lag) / N: close to 1 for any periodic frame.
            voicing = (peak * self.window_length / (self.window_length - lag)).clamp(0.0, 1.0)
        return torch.cat([energy_db[..., None] / 10, f0_semitones[..., None] / 12, voicing[..., None],
                          mfcc / math.sqrt(mfcc.shape[-1])], dim=-1)

    def statistics(self, waveform, frame_mask):
        """(B, 4 * (3 + num_mfcc)) utterance statistics before standardisation, in float32."""
        features = self.frame_features(waveform)[:, :frame_mask.shape[1]]  # conv padding may give fewer frames
        valid = frame_mask[:, :features.shape[1]].bool()
        energy_db = features[..., 0] * 10
        loudest = energy_db.masked_fill(~valid, SILENCE_DB).amax(1, keepdim=True)
        speech = (valid & (energy_db >= loudest - SPEECH_RANGE_DB)).to(features.dtype)  # never empty: the loudest
        voiced = speech * features[..., 2].square()  # strongly periodic frames carry the pitch statistics
        pitch = masked_statistics(features[..., 1:2], voiced)
        others = masked_statistics(torch.cat([features[..., :1], features[..., 2:]], dim=-1), speech)
        change = (features[:, 1:] - features[:, :-1]).abs()
        dynamics = masked_statistics(change, speech[:, 1:] * speech[:, :-1])  # pairs of adjacent speech frames
        return torch.cat([pitch, others, dynamics], dim=-1)

    def forward(self, waveform, frame_mask):
        statistics = self.statistics(waveform, frame_mask).to(self.projection[0].weight.dtype)
        return self.projection(self.standardise(statistics))

    def standardise(self, statistics):
        if self.training and statistics.shape[0] == 1:
            # A batch of one has no spread to standardise by: use (and leave) the running statistics.
            return nn.functional.batch_norm(statistics, self.norm.running_mean, self.norm.running_var, training=False,
                                            eps=self.norm.eps)
        return self.norm(statistics)
