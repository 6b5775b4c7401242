"""Audio in: any waveform source -> a 16 kHz mono float32 numpy array.

Shipped with Hub checkpoints (the pipeline uses it), so it imports only numpy, torch and the
standard library; `soundfile` is imported only when a file or bytes must be decoded. Nothing here
needs ffmpeg, torchcodec, torchaudio or scipy.
"""

from __future__ import annotations

import io
import math
import os
from functools import lru_cache

import numpy as np
import torch

from .configuration_mer import SAMPLING_RATE

# Band-limited resampling (windowed sinc, Hann window): the low-pass cut-off sits at ROLLOFF x the
# lower Nyquist frequency, and each output sample sees LOWPASS_ZERO_CROSSINGS zero crossings of the
# sinc on each side. torchaudio's default of 6 already attenuates 7 kHz by 20 % when going to 16 kHz;
# 32 keeps the pass band flat (within 0.1 %) up to 7.5 kHz and rejects >= 50 dB from 8.5 kHz, for a
# few more taps (a 34 s clip at 44.1 kHz still resamples in well under a second on one CPU core).
LOWPASS_ZERO_CROSSINGS = 32
ROLLOFF = 0.99


def _import_soundfile():
    try:
        import soundfile
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Decoding audio files or bytes needs the `soundfile` package: `pip install soundfile`. "
            "Alternatively pass the waveform itself as a numpy array or {'array', 'sampling_rate'}."
        ) from err
    return soundfile


def _check_sampling_rate(sampling_rate, name: str) -> int:
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name}: sampling_rate must be a positive integer in Hz, got {sampling_rate!r}.")
    if not math.isfinite(float(sampling_rate)) or sampling_rate <= 0 or float(sampling_rate) != int(sampling_rate):
        raise ValueError(
            f"{name}: sampling_rate must be a positive integer in Hz, got {sampling_rate!r}. "
            "Pass the rate the waveform was recorded at, e.g. 16000 or 44100."
        )
    return int(sampling_rate)


@lru_cache(maxsize=16)
def _sinc_resample_kernel(orig_sr: int, target_sr: int) -> tuple[torch.Tensor, int]:
    """Polyphase filter bank for a gcd-reduced rate pair.

    Output phase p (0 <= p < target_sr) of every block of `orig_sr` input samples is a dot product of
    the input with kernel[p]: a Hann-windowed sinc low-pass centred at the output instant
    p / target_sr, expressed in input samples. Returns (kernel (target_sr, 1, taps), width).
    """
    cutoff = min(orig_sr, target_sr) * ROLLOFF  # in cycles per (gcd-reduced) second
    width = math.ceil(LOWPASS_ZERO_CROSSINGS * orig_sr / cutoff)  # one-sided support, input samples
    input_offsets = torch.arange(-width, width + orig_sr, dtype=torch.float64) / orig_sr  # (taps,)
    output_phases = -torch.arange(target_sr, dtype=torch.float64)[:, None] / target_sr  # (target_sr, 1)
    t = (input_offsets[None, :] + output_phases) * cutoff  # (target_sr, taps), in sinc periods
    t = t.clamp(-LOWPASS_ZERO_CROSSINGS, LOWPASS_ZERO_CROSSINGS)
    window = torch.cos(t * math.pi / LOWPASS_ZERO_CROSSINGS / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, torch.ones_like(t), t))
    # cutoff / orig_sr keeps unit gain in the pass band.
    kernel = sinc * window * (cutoff / orig_sr)
    return kernel[:, None, :], width


def resample(waveform, orig_sr: int, target_sr: int = SAMPLING_RATE):
    """Band-limited resampling along the last axis; returns the same type (numpy or torch) it got.

    Output length is ceil(len * target_sr / orig_sr); float32 out.
    """
    orig_sr = _check_sampling_rate(orig_sr, "resample")
    target_sr = _check_sampling_rate(target_sr, "resample")
    is_numpy = not isinstance(waveform, torch.Tensor)
    signal = torch.as_tensor(np.asarray(waveform) if is_numpy else waveform)
    if orig_sr == target_sr:
        out = signal.to(torch.float32)
        return out.numpy() if is_numpy else out

    gcd = math.gcd(orig_sr, target_sr)
    orig, target = orig_sr // gcd, target_sr // gcd
    kernel, width = _sinc_resample_kernel(orig, target)

    leading_shape = signal.shape[:-1]
    length = signal.shape[-1]
    # float32 arithmetic: float64 conv1d is ~15x slower on CPU, and its rounding (~1e-7) is far below the
    # filter's own error.
    flat = signal.reshape(-1, 1, length).to(torch.float32)  # (N, 1, L)
    # Pad so every output instant has its full two-sided support (zeros outside the signal).
    padded = torch.nn.functional.pad(flat, (width, width + orig))
    # (N, target, blocks): phase p of block b is output sample b * target + p.
    phases = torch.nn.functional.conv1d(padded, kernel.to(device=padded.device, dtype=padded.dtype), stride=orig)
    out = phases.transpose(1, 2).reshape(flat.shape[0], -1)
    out_length = math.ceil(target * length / orig)
    out = out[:, :out_length].reshape(*leading_shape, out_length).to(torch.float32)
    return out.numpy() if is_numpy else out


def _to_mono_float(array: np.ndarray, name: str) -> np.ndarray:
    """(samples,), (channels, samples) or (samples, channels) of any dtype -> float (samples,)."""
    if array.ndim == 0 or array.ndim > 2:
        raise ValueError(
            f"{name}: expected a 1-D waveform or a 2-D (channels, samples) array, got shape {array.shape}."
        )
    if np.issubdtype(array.dtype, np.unsignedinteger):
        # Unsigned PCM (8-bit WAV stores uint8) is offset binary: silence is the mid value (128 for uint8), so
        # centre it before scaling; dividing by iinfo.min (0 for unsigned types) would give inf/NaN.
        half = float(np.iinfo(array.dtype).max // 2 + 1)
        array = (array.astype(np.float64) - half) / half
    elif np.issubdtype(array.dtype, np.integer):
        # PCM integers -> [-1, 1), the same scale soundfile gives.
        array = array.astype(np.float64) / float(-np.iinfo(array.dtype).min)
    elif not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name}: expected a numeric waveform, got dtype {array.dtype}.")
    if array.ndim == 2:
        # The channel axis is the short one: soundfile gives (samples, channels), torch code (channels, samples).
        channel_axis = 0 if array.shape[0] <= array.shape[1] else 1
        array = array.mean(axis=channel_axis)
    if array.size == 0:
        raise ValueError(f"{name}: the waveform is empty (0 samples). Remove the item or check how it was cut.")
    if not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise ValueError(
            f"{name}: the waveform contains {bad} NaN/inf samples. Fix or drop the item; "
            "NaN audio would make the whole batch's loss NaN."
        )
    return array


def _decode(file_or_bytes, name: str) -> tuple[np.ndarray, int]:
    soundfile = _import_soundfile()
    try:
        data, sampling_rate = soundfile.read(file_or_bytes, dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, TypeError, ValueError, EOFError) as err:
        raise ValueError(
            f"{name}: could not decode the audio ({err}). The file may be corrupt or truncated, or in a "
            "format soundfile cannot read (it reads WAV, FLAC, OGG, MP3); re-encode it, e.g. "
            "`sox in.xyz -r 16000 -c 1 out.wav`."
        ) from err
    if data.size == 0:
        raise ValueError(f"{name}: the audio decodes to 0 samples. Remove the item or re-export the audio.")
    return data.T, sampling_rate  # (channels, samples)


def _read_path(path, name: str | None) -> tuple[np.ndarray, int]:
    path = os.fspath(path)
    name = name or path
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name}: audio file not found: {path!r}. Check the path or the corpus root.")
    if os.path.isdir(path):
        raise ValueError(f"{name}: {path!r} is a directory, not an audio file.")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{name}: the audio file {path!r} is empty (0 bytes). Re-copy or remove it.")
    return _decode(path, name)


def _read_bytes(data, name: str) -> tuple[np.ndarray, int]:
    if len(data) == 0:
        raise ValueError(f"{name}: the audio bytes are empty. Re-encode the item or remove it.")
    return _decode(io.BytesIO(bytes(data)), name)


def load_audio(
    source,
    sampling_rate: int = SAMPLING_RATE,
    name: str | None = None,
    *,
    target_sampling_rate: int = SAMPLING_RATE,
) -> np.ndarray:
    """Decode, mix to mono and resample any audio source to a 1-D float32 array at 16 kHz.

    `source` may be a file path, raw encoded bytes, a numpy array or torch tensor (1-D, or 2-D with a
    channel axis; taken to be at `sampling_rate`), `{"array", "sampling_rate"}`, or a datasets-style
    `{"bytes", "path"}` (bytes win when both are set). `name` labels errors (e.g. "item 3").
    """
    label = name or "audio"
    if isinstance(source, (str, os.PathLike)):
        waveform, rate = _read_path(source, name)
        label = name or os.fspath(source)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        waveform, rate = _read_bytes(source, label)
    elif isinstance(source, dict):
        if "array" in source:
            if source.get("sampling_rate") is None:
                raise ValueError(f"{label}: a dict with 'array' also needs 'sampling_rate' (in Hz).")
            waveform, rate = source["array"], source["sampling_rate"]
        elif source.get("bytes") is not None:
            waveform, rate = _read_bytes(source["bytes"], name or source.get("path") or label)
            label = name or source.get("path") or label
        elif source.get("path") is not None:
            waveform, rate = _read_path(source["path"], name)
            label = name or source["path"]
        else:
            raise ValueError(
                f"{label}: the audio dict has neither 'array', 'bytes' nor 'path' "
                f"(keys: {sorted(source)}). Pass a file path, bytes or {{'array', 'sampling_rate'}}."
            )
    elif isinstance(source, (np.ndarray, torch.Tensor, list, tuple)):
        waveform, rate = source, sampling_rate
    else:
        raise ValueError(
            f"{label}: unsupported audio input of type {type(source).__name__}. Pass a path, bytes, "
            "a numpy array, a torch tensor, or {'array', 'sampling_rate'}."
        )

    rate = _check_sampling_rate(rate, label)
    target_sampling_rate = _check_sampling_rate(target_sampling_rate, label)
    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().cpu()
        if waveform.dtype in (torch.bfloat16, torch.float16):
            waveform = waveform.float()  # numpy has no bfloat16; float32 holds every bf16/fp16 value exactly
        waveform = waveform.numpy()
    waveform = _to_mono_float(np.asarray(waveform), label)
    if rate != target_sampling_rate:
        waveform = resample(waveform, rate, target_sampling_rate)
    return np.ascontiguousarray(waveform, dtype=np.float32)
