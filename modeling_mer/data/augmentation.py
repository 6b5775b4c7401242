"""Training-time waveform augmentation: speed perturbation and additive noise, drawn per clip and epoch.

A speech encoder trained from scratch on a few hundred clean clips learns the recording as much as the
voice: the demo model, trained on digitally silent synthetic speech, lost half its accuracy when noise at
-50 dBFS was added. Two standard perturbations give it other views of the same utterance:

- speed perturbation (Ko et al., 2015): resample by a factor drawn from a range, which moves tempo and pitch
  together, as Kaldi's 0.9 / 1.0 / 1.1 recipe does;
- additive noise at a signal-to-noise ratio drawn from a range, white or pink (1/f, closer to room and
  line noise), at even odds.

Both read the collator's per-(seed, epoch, utterance) generator, so a resumed run sees the same views.
Evaluation never augments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WaveformAugmentation:
    """`speed_range=(0.9, 1.1)` resamples by a uniform factor in the range (None: off); `noise_probability` of the
    clips get noise at a uniform SNR in `noise_snr_db` (dB)."""

    speed_range: tuple[float, float] | None = None
    noise_probability: float = 0.0
    noise_snr_db: tuple[float, float] = (10.0, 40.0)

    def __post_init__(self):
        if self.speed_range is not None:
            low, high = self.speed_range
            if not 0.5 <= low <= high <= 2.0:
                raise ValueError(f"speed_range={self.speed_range} is invalid: expected two factors 0.5 <= low <= "
                                 "high <= 2.0, e.g. (0.9, 1.1).")
        if not 0.0 <= self.noise_probability <= 1.0:
            raise ValueError(f"noise_probability={self.noise_probability} is invalid: expected a probability in [0, 1].")
        low, high = self.noise_snr_db
        if low > high:
            raise ValueError(f"noise_snr_db={self.noise_snr_db} is invalid: expected (low, high) with low <= high.")

    @property
    def active(self) -> bool:
        return self.speed_range is not None or self.noise_probability > 0

    def __call__(self, waveform: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.speed_range is not None:
            waveform = change_speed(waveform, rng.uniform(*self.speed_range))
        if self.noise_probability > 0 and rng.random() < self.noise_probability:
            colour = "pink" if rng.random() < 0.5 else "white"
            waveform = add_noise(waveform, rng.uniform(*self.noise_snr_db), rng, colour)
        return waveform


def change_speed(waveform: np.ndarray, factor: float) -> np.ndarray:
    """Play `factor` times faster (factor > 1 shortens the clip and raises its pitch), by linear interpolation."""
    length = max(1, int(round(len(waveform) / factor)))
    positions = np.arange(length) * factor
    return np.interp(positions, np.arange(len(waveform)), waveform).astype(waveform.dtype)


def coloured_noise(length: int, rng: np.random.Generator, colour: str) -> np.ndarray:
    """Unit-power white noise, or pink noise (power spectral density 1/f) shaped in the frequency domain."""
    noise = rng.standard_normal(length)
    if colour == "pink":
        spectrum = np.fft.rfft(noise)
        frequencies = np.arange(len(spectrum), dtype=np.float64)
        frequencies[0] = 1.0  # keep the DC bin finite; its weight is then that of the lowest frequency
        noise = np.fft.irfft(spectrum / np.sqrt(frequencies), n=length)
    elif colour != "white":
        raise ValueError(f"colour={colour!r} is unknown: use 'white' or 'pink'.")
    return noise / max(np.sqrt(np.mean(noise ** 2)), 1e-12)


def add_noise(waveform: np.ndarray, snr_db: float, rng: np.random.Generator, colour: str = "white") -> np.ndarray:
    """The clip plus noise whose power is the clip's divided by 10^(snr_db / 10). A silent clip gets none (its
    SNR is undefined), rather than noise of an arbitrary level."""
    power = float(np.mean(waveform.astype(np.float64) ** 2))
    if power == 0.0:
        return waveform
    noise = coloured_noise(len(waveform), rng, colour) * np.sqrt(power / 10 ** (snr_db / 10))
    return (waveform + noise).astype(waveform.dtype)
