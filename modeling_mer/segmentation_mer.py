"""Long recordings -> speech segments and the words spoken in each: streaming audio, voice-activity detection,
word alignment.

Shipped with every checkpoint beside pipeline_mer.py (imports only numpy, torch, the standard library and
audio_io_mer; `soundfile` and `silero-vad` are imported when used). Memory stays flat in the recording's
length: audio is read in blocks, the detector keeps one score per frame (4 bytes per 10-32 ms), and a segment's
samples are read back only when it is scored.

Detectors (`vad=`):
- "silero": the silero-vad model (`pip install silero-vad`; its wheel ships the weights and needs no
  torchaudio). One 32 ms frame at a time, its recurrent state carried from block to block, so blocks change
  nothing.
- "energy": frame level in dB above the recording's noise floor (its 10th percentile). Good on clean
  recordings with pauses; fooled by loud steady noise or music.
- "auto" (default): silero when installed, else energy.
Both feed the same hysteresis (`speech_regions`): speech starts at a score >= threshold, ends after
`min_silence_seconds` below the lower threshold; regions shorter than `min_speech_seconds` are dropped.
"""

from __future__ import annotations

import io
import itertools
import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from .audio_io_mer import _import_soundfile, load_audio, resample
from .configuration_mer import SAMPLING_RATE

VAD_CHOICES = ("auto", "silero", "energy")
BLOCK_SECONDS = 30.0  # audio held in memory at once while detecting speech
ENERGY_FRAME_SAMPLES = 160  # 10 ms: boundaries to within a frame
SILERO_FRAME_SAMPLES = 512  # the only frame size silero-vad takes at 16 kHz
# Energy detector: speech starts 4 dB above the floor (ends below 2.8 dB). Its score has no memory, unlike
# silero's, so it needs longer silences (0.25 s) to end a segment: shorter dips are pauses inside a sentence.
ENERGY_MARGIN_DB = 4.0
ENERGY_ABSOLUTE_SPEECH_DB = -50.0
# A word whose middle lies this far outside every segment is in none (e.g. outside segments a user chose);
# closer ones go to the nearest segment, since detected boundaries can be off by a syllable.
WORD_MAX_GAP_SECONDS = 0.5
RESAMPLE_MARGIN_SECONDS = 0.05  # context read on each side of a block resampled on its own: covers the sinc's support


@dataclass(frozen=True)
class VADSettings:
    """Hysteresis settings; the defaults are silero's.

    They differ from silero-vad's own in two places, measured on demo conversations: no padding, since its
    probability already stays high ~0.1 s past the end of speech (ends came out 0.15-0.17 s late with its
    30 ms pad), and 0.15 s of silence to end a segment (0.1 s split sentences at their commas).
    """

    threshold: float = 0.5
    neg_threshold: float = 0.35
    min_speech_seconds: float = 0.25
    min_silence_seconds: float = 0.15
    pad_seconds: float = 0.0


ENERGY_SETTINGS = VADSettings(min_silence_seconds=0.25, pad_seconds=0.03)


# ---------------------------------------------------------------------- streaming audio


class AudioStream:
    """A recording read piece by piece at 16 kHz mono: `len(stream)` samples, `read(start, stop)`, `blocks()`.

    Paths (and encoded bytes) are read from the file block by block; arrays and `{"array", "sampling_rate"}`
    are converted once (they are in memory already).
    """

    def __init__(self, source, name="input"):
        self.name = name
        self._file, self._array = None, None
        if isinstance(source, (str, os.PathLike, bytes, bytearray)):
            load_audio_header_check(source, name)
            soundfile = _import_soundfile()
            handle = source if isinstance(source, (str, os.PathLike)) else io.BytesIO(bytes(source))
            self._file = soundfile.SoundFile(handle)
            self.source_rate = self._file.samplerate
            self._length = math.ceil(self._file.frames * SAMPLING_RATE / self.source_rate)
        else:
            self._array = load_audio(source, name=name)
            self.source_rate = SAMPLING_RATE
            self._length = len(self._array)

    def __len__(self):
        return self._length

    @property
    def seconds(self):
        return self._length / SAMPLING_RATE

    def read(self, start, stop):
        """Samples [start, stop) at 16 kHz, float32 mono."""
        start, stop = max(0, int(start)), min(self._length, int(stop))
        if self._array is not None:
            return self._array[start:stop]
        if self.source_rate == SAMPLING_RATE:
            return self._read_source(start, stop)
        # Another rate: resample this stretch with some context on each side, then cut the context off, so
        # the samples equal those of resampling the whole file (to float32 rounding).
        ratio = self.source_rate / SAMPLING_RATE
        margin = int(RESAMPLE_MARGIN_SECONDS * self.source_rate)
        first = max(0, math.floor(start * ratio) - margin)
        last = min(self._file.frames, math.ceil(stop * ratio) + margin)
        # Start on an output instant: source sample `first` must sit on the 16 kHz grid.
        step = self.source_rate // math.gcd(self.source_rate, SAMPLING_RATE)
        first -= first % step
        piece = resample(self._read_source(first, last), self.source_rate, SAMPLING_RATE)
        offset = first * SAMPLING_RATE // self.source_rate  # exact: `first` is on the grid
        return piece[start - offset: stop - offset]

    def _read_source(self, first, last):
        self._file.seek(first)
        data = self._file.read(last - first, dtype="float32", always_2d=True)
        return np.ascontiguousarray(data.mean(axis=1), dtype=np.float32)

    def blocks(self, block_samples):
        """(offset, samples) pieces of at most block_samples, in order, covering the recording."""
        for offset in range(0, self._length, block_samples):
            yield offset, self.read(offset, offset + block_samples)


def load_audio_header_check(source, name):
    """Missing, empty or undecodable files: the clear errors of audio_io_mer, before any work."""
    soundfile = _import_soundfile()

    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path) or os.path.getsize(path) == 0:
            load_audio(path, name=name)  # raises its "not found" / "is empty" / "directory" error
    elif len(source) == 0:
        load_audio(source, name=name)
    try:
        soundfile.info(source if isinstance(source, (str, os.PathLike)) else io.BytesIO(bytes(source)))
    except (RuntimeError, soundfile.LibsndfileError, TypeError, ValueError, EOFError):
        load_audio(source, name=name)  # raises the decoding error with its advice


# ---------------------------------------------------------------------- detectors


def frame_levels_db(samples, frame_samples=ENERGY_FRAME_SAMPLES):
    """Mean power per frame in dB; a last partial frame counts over its own samples."""
    count = math.ceil(len(samples) / frame_samples)
    padded = np.zeros(count * frame_samples, dtype=np.float64)
    padded[: len(samples)] = samples
    power = (padded.reshape(count, frame_samples) ** 2).sum(1)
    sizes = np.full(count, frame_samples, dtype=np.float64)
    sizes[-1] = len(samples) - (count - 1) * frame_samples
    return 10 * np.log10(power / sizes + 1e-12)


def energy_scores(stream, block_samples):
    """Per 10 ms frame: 0 at the noise floor (10th percentile of the recording's levels), 0.5 at
    ENERGY_MARGIN_DB above it, 1 at twice that."""
    block_samples -= block_samples % ENERGY_FRAME_SAMPLES  # frames never straddle blocks
    levels = np.concatenate([frame_levels_db(block) for _, block in stream.blocks(block_samples)])
    floor, peak = np.percentile(levels, 10), np.percentile(levels, 99)
    if peak - floor < 2 * ENERGY_MARGIN_DB:
        # No pauses to learn the floor from (all speech, or all silence): an absolute level decides.
        return (levels > ENERGY_ABSOLUTE_SPEECH_DB).astype(np.float32)
    return np.clip((levels - floor) / (2 * ENERGY_MARGIN_DB), 0.0, 1.0)


def load_silero():
    """The silero-vad model, or ImportError; restores torch's thread count, which importing silero_vad sets to 1."""
    threads = torch.get_num_threads()
    # try/except, not try/finally: transformers' check for a shipped file's imports skips those inside a
    # try/except, so a checkpoint still loads where silero-vad is not installed.
    try:
        from silero_vad import load_silero_vad
    except ImportError:
        torch.set_num_threads(threads)
        raise
    torch.set_num_threads(threads)
    return load_silero_vad()


def silero_scores(stream, block_samples, model=None):
    """silero-vad's speech probability per 32 ms frame; one frame at a time, state carried across blocks."""
    model = model or load_silero()
    block_samples -= block_samples % SILERO_FRAME_SAMPLES
    model.reset_states()
    scores = []
    with torch.inference_mode():
        for _, block in stream.blocks(block_samples):
            frames = torch.from_numpy(np.ascontiguousarray(block))
            tail = (-len(frames)) % SILERO_FRAME_SAMPLES  # only the last block of the recording is short
            frames = torch.nn.functional.pad(frames, (0, tail)).view(-1, SILERO_FRAME_SAMPLES)
            scores.extend(model(frame[None], SAMPLING_RATE).item() for frame in frames)
    return np.asarray(scores, dtype=np.float32)


def speech_regions(scores, frame_samples, total_samples, settings=VADSettings()):
    """Hysteresis over per-frame speech scores -> [(start_sample, end_sample)], padded, never overlapping."""
    min_silence = settings.min_silence_seconds * SAMPLING_RATE / frame_samples  # in frames
    regions, start, silent_since = [], None, None
    for index, score in enumerate(scores):
        if start is None:
            if score >= settings.threshold:
                start, silent_since = index, None
            continue
        if score >= settings.threshold:
            silent_since = None
        elif score < settings.neg_threshold:
            silent_since = index if silent_since is None else silent_since
            if index + 1 - silent_since >= min_silence:
                regions.append((start, silent_since))
                start, silent_since = None, None
    if start is not None:
        regions.append((start, silent_since if silent_since is not None else len(scores)))
    min_frames = settings.min_speech_seconds * SAMPLING_RATE / frame_samples
    bounds = [(first * frame_samples, min(last * frame_samples, total_samples))
              for first, last in regions if last - first >= min_frames]
    pad = int(settings.pad_seconds * SAMPLING_RATE)
    padded = []
    for index, (first, last) in enumerate(bounds):
        # Padding stops halfway to a neighbour, so segments never overlap.
        low = 0 if index == 0 else (bounds[index - 1][1] + first) // 2
        high = total_samples if index == len(bounds) - 1 else (last + bounds[index + 1][0]) // 2
        padded.append((max(low, first - pad), min(high, last + pad)))
    return padded


def detect_speech(stream, vad="auto", settings=None, block_seconds=BLOCK_SECONDS):
    """Speech regions of an AudioStream as [(start_sample, end_sample)], with the detector `vad` and its default
    settings unless `settings` are given."""
    vad = resolve_vad(vad)
    block_samples = int(block_seconds * SAMPLING_RATE)
    if vad == "silero":
        scores, frame = silero_scores(stream, block_samples), SILERO_FRAME_SAMPLES
    else:
        scores, frame = energy_scores(stream, block_samples), ENERGY_FRAME_SAMPLES
    return speech_regions(scores, frame, len(stream), settings or (VADSettings() if vad == "silero" else ENERGY_SETTINGS))


def silero_available():
    try:
        import silero_vad  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_vad(vad):
    if vad not in VAD_CHOICES:
        raise ValueError(f"vad must be one of {VAD_CHOICES}, got {vad!r}.")
    if vad == "auto":
        return "silero" if silero_available() else "energy"
    if vad == "silero" and not silero_available():
        raise ImportError("vad='silero' needs the silero-vad package: `pip install silero-vad` (or "
                          "`pip install mer[vad]`); or pass vad='energy', or your own segments=[(start, end), ...].")
    return vad


# ---------------------------------------------------------------------- user input: segments and words


def check_segments(segments, seconds, min_samples, name="input"):
    """User segments [(start, end), ...] in seconds -> sorted [(start_sample, end_sample)]; errors name the segment."""
    if not isinstance(segments, (list, tuple)) or not segments:
        raise ValueError(f"{name}: segments must be a non-empty list of (start, end) pairs in seconds.")
    checked = []
    for index, segment in enumerate(segments):
        ok = isinstance(segment, (list, tuple)) and len(segment) == 2 and all(
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            for value in segment)
        if not ok:
            raise ValueError(f"{name}: segment {index} is {segment!r}; each segment is (start, end) in seconds.")
        start, end = float(segment[0]), float(segment[1])
        if not 0 <= start < end <= seconds + 1e-6:
            raise ValueError(f"{name}: segment {index} ({start}, {end}) must satisfy 0 <= start < end <= "
                             f"{seconds:.3f} (the recording's length in seconds).")
        first, last = round(start * SAMPLING_RATE), min(round(end * SAMPLING_RATE), round(seconds * SAMPLING_RATE))
        if last - first < min_samples:
            raise ValueError(f"{name}: segment {index} ({start}, {end}) is shorter than the speech encoder's "
                             f"receptive field ({min_samples} samples = {1000 * min_samples / SAMPLING_RATE:.1f} "
                             "ms); widen or drop it.")
        checked.append((first, last))
    checked.sort()
    for (_, previous_end), (start, _) in itertools.pairwise(checked):
        if start < previous_end:
            raise ValueError(f"{name}: segments overlap around {start / SAMPLING_RATE:.3f} s; pass disjoint "
                             "(start, end) pairs.")
    return checked


def check_words(words, name="input"):
    """Word timings [{"word", "start", "end"}, ...] (seconds) -> the same, sorted by start; clear errors."""
    if not isinstance(words, (list, tuple)):
        raise ValueError(f"{name}: words must be a list of {{'word', 'start', 'end'}} dicts, got "
                         f"{type(words).__name__}.")
    checked = []
    for index, word in enumerate(words):
        if not isinstance(word, dict) or not {"word", "start", "end"} <= set(word):
            raise ValueError(f"{name}: word {index} is {word!r}; each word is {{'word': str, 'start': seconds, "
                             "'end': seconds}.")
        start, end = word["start"], word["end"]
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                      for v in (start, end))
        if not isinstance(word["word"], str) or not numbers or not 0 <= start <= end:
            raise ValueError(f"{name}: word {index} {word!r} needs a string 'word' and 0 <= start <= end in seconds.")
        checked.append({"word": word["word"], "start": float(start), "end": float(end)})
    return sorted(checked, key=lambda word: (word["start"], word["end"]))


def assign_words(words, segments, max_gap_seconds=WORD_MAX_GAP_SECONDS):
    """Each word -> the segment (sample bounds) it overlaps most, else the nearest one within max_gap_seconds;
    per segment, in order.

    A word the detector cut in two still lands in one segment, and a word in a pause (the detector's
    boundary a little off) goes to the closer segment rather than being lost; a word far from every segment
    (outside the segments a user chose) belongs to none.
    """
    per_segment = [[] for _ in segments]
    if not segments:
        return per_segment
    starts = np.array([start for start, _ in segments], dtype=np.float64) / SAMPLING_RATE
    ends = np.array([end for _, end in segments], dtype=np.float64) / SAMPLING_RATE
    for word in words:
        overlap = np.minimum(ends, word["end"]) - np.maximum(starts, word["start"])
        if overlap.max() > 0:
            index = int(overlap.argmax())
        else:
            middle = (word["start"] + word["end"]) / 2
            distance = np.maximum(starts - middle, middle - ends)
            index = int(distance.argmin())
            if distance[index] > max_gap_seconds:
                continue
        per_segment[index].append(word)
    return per_segment


def join_words(words):
    """Words -> text; ASR word pieces may carry their own leading space, plain words get one."""
    return " ".join(word["word"].strip() for word in words if word["word"].strip())
