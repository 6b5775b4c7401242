"""A conversation with known truth, built from demo-corpus utterances: for timeline tests and benchmarks.

Utterances are joined by pauses of random length with a little white noise over everything; each
utterance's words are spread evenly over its duration (the corpus has no word timings, and a pause-bounded
segment only needs each word inside the right utterance). Training side: never shipped.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import soundfile

from ..configuration_mer import SAMPLING_RATE


@dataclass
class Conversation:
    waveform: np.ndarray  # 16 kHz mono float32
    utterances: list[dict] = field(default_factory=list)  # start, end (s), text, label (int), index, waveform

    @property
    def words(self):
        return [word for utterance in self.utterances for word in utterance["words"]]


def spread_words(text, start, end):
    """The words of `text` with equal shares of [start, end] (seconds)."""
    tokens = text.split()
    edges = np.linspace(start, end, len(tokens) + 1)
    return [{"word": token, "start": float(edges[i]), "end": float(edges[i + 1])} for i, token in enumerate(tokens)]


def make_conversation(dataset, indices, seed=0, pause_seconds=(0.3, 1.5), noise_std=0.003):
    """The utterances `indices` of a demo-style dataset (FLAC bytes in `audio`), in that order, with pauses."""
    rng = np.random.default_rng(seed)
    pieces, utterances, position = [], [], 0
    for index in indices:
        row = dataset[int(index)]
        samples, rate = soundfile.read(io.BytesIO(row["audio"]["bytes"]), dtype="float32")
        if rate != SAMPLING_RATE:
            raise ValueError(f"utterance {index} is at {rate} Hz; the conversation builder expects {SAMPLING_RATE}.")
        pause = int(rng.uniform(*pause_seconds) * SAMPLING_RATE)
        pieces.append(np.zeros(pause, np.float32))
        position += pause
        start, end = position / SAMPLING_RATE, (position + len(samples)) / SAMPLING_RATE
        utterances.append({"index": int(index), "start": start, "end": end, "text": row["text"],
                           "label": int(row["label"]), "waveform": samples,
                           "words": spread_words(row["text"], start, end)})
        pieces.append(samples)
        position += len(samples)
    pause = int(rng.uniform(*pause_seconds) * SAMPLING_RATE)
    pieces.append(np.zeros(pause, np.float32))
    waveform = np.concatenate(pieces)
    waveform += (rng.standard_normal(len(waveform)) * noise_std).astype(np.float32)
    return Conversation(waveform=waveform, utterances=utterances)


def boundary_hits(found, truth, tolerance=0.15):
    """How many true (start, end) pairs have a found segment with both ends within `tolerance` seconds."""
    hits = 0
    for start, end in truth:
        hits += any(abs(s - start) <= tolerance and abs(e - end) <= tolerance for s, e in found)
    return hits
