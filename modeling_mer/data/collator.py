"""Dataset rows -> one padded model batch: decode audio, crop long clips, call the processor, add labels."""

from __future__ import annotations

import zlib

import numpy as np
import torch

from ..audio_io_mer import load_audio
from ..configuration_mer import SAMPLING_RATE
from .augmentation import WaveformAugmentation


def crop_waveform(waveform: np.ndarray, max_samples: int, training: bool, rng: np.random.Generator) -> np.ndarray:
    """Cut a clip longer than `max_samples` down to `max_samples`.

    Training takes a uniformly random window (a different view each epoch: cheap augmentation).
    Evaluation takes the centre window, so a score never depends on a seed; emotional cues are not
    known to sit at either end of an utterance, and the centre avoids leading/trailing silence.
    """
    excess = len(waveform) - max_samples
    if excess <= 0:
        return waveform
    start = int(rng.integers(0, excess + 1)) if training else excess // 2
    return waveform[start:start + max_samples]


class MERDataCollator:
    """Collate rows with `audio` ({"bytes","path"} or {"array","sampling_rate"}), `text` and `label`.

    Returns the processor's outputs (`input_ids`, `attention_mask`, `input_values`,
    `audio_attention_mask`) plus `labels` (LongTensor). Rows without an `audio` key (text-only corpora
    such as MELD), or `modalities=("text",)`, give text inputs only; `modalities=("audio",)` gives
    audio inputs only. `max_audio_seconds` crops longer clips (random window when `training`, centre
    window otherwise). `augmentation` (training only) perturbs each clip's speed and adds noise before
    the crop. Each random crop and augmentation is drawn from (seed, epoch, utterance), not from a running
    generator, so a resumed run (which skips batches without collating them) sees exactly the views of an
    uninterrupted one; the trainer calls `set_epoch`.
    """

    def __init__(self, processor, max_audio_seconds: float | None = None, training: bool = False,
                 modalities: tuple[str, ...] | None = None, seed: int = 0, sampling_rate: int = SAMPLING_RATE,
                 text_column: str = "text", audio_column: str = "audio", label_column: str = "label",
                 augmentation: WaveformAugmentation | None = None):
        if max_audio_seconds is not None and max_audio_seconds <= 0:
            raise ValueError(f"max_audio_seconds must be positive or None, got {max_audio_seconds}.")
        if modalities is not None and (not modalities or set(modalities) - {"text", "audio"}):
            raise ValueError(f"modalities must be a non-empty subset of ('text', 'audio'), got {modalities}.")
        self.processor = processor
        self.max_audio_seconds = max_audio_seconds
        self.training = training
        self.modalities = None if modalities is None else tuple(modalities)
        self.sampling_rate = sampling_rate
        self.text_column, self.audio_column, self.label_column = text_column, audio_column, label_column
        self.seed = seed
        self.epoch = 0
        self.augmentation = augmentation if training and augmentation is not None and augmentation.active else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _view_rng(self, feature: dict, index: int) -> np.random.Generator:
        """The generator of this clip's training view (augmentation, then crop) in this epoch."""
        key = feature.get("id") or feature.get(self.text_column) or str(index)
        return np.random.default_rng([self.seed, self.epoch, zlib.crc32(str(key).encode())])

    def _modalities_of(self, features: list[dict]) -> tuple[str, ...]:
        if self.modalities is not None:
            wanted = self.modalities
        else:
            wanted = ("text", "audio") if any(self.audio_column in f for f in features) else ("text",)
        for modality, column in (("text", self.text_column), ("audio", self.audio_column)):
            if modality in wanted:
                absent = [i for i, f in enumerate(features) if f.get(column) is None]
                if absent:
                    raise ValueError(f"Batch items {absent[:5]} have no {column!r}, which the {modality} "
                                     "inputs need; use modalities=(...) to leave that modality out.")
        return wanted

    def _item_name(self, feature: dict, index: int) -> str:
        return f"item {index}" + (f" ({feature['id']})" if "id" in feature else "")

    def _waveform(self, feature: dict, index: int) -> np.ndarray:
        waveform = load_audio(feature[self.audio_column], sampling_rate=self.sampling_rate,
                              name=self._item_name(feature, index))
        rng = self._view_rng(feature, index)
        if self.augmentation is not None:
            waveform = self.augmentation(waveform, rng)
        if self.max_audio_seconds is not None:
            waveform = crop_waveform(waveform, int(round(self.max_audio_seconds * SAMPLING_RATE)),
                                     self.training, rng)
        return waveform

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("Cannot collate an empty batch.")
        modalities = self._modalities_of(features)
        text = [f[self.text_column] for f in features] if "text" in modalities else None
        audio = [self._waveform(f, i) for i, f in enumerate(features)] if "audio" in modalities else None
        batch = dict(self.processor(text=text, audio=audio, sampling_rate=SAMPLING_RATE,
                                    return_tensors="pt", padding=True))
        if all(self.label_column in f and f[self.label_column] is not None for f in features):
            batch["labels"] = torch.tensor([int(f[self.label_column]) for f in features], dtype=torch.long)
        elif any(self.label_column in f for f in features):
            raise ValueError(f"Some batch items have a {self.label_column!r} and others do not; "
                             "label every item or none (for prediction).")
        return batch
