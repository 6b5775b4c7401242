"""What every corpus loader shares: the audio column format, load reports, errors and the datasets cache."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets

from ..configuration_mer import SAMPLING_RATE

logger = logging.getLogger(__name__)

# Bump when the rows a loader yields change, so old cache entries are not reused.
LOADER_VERSION = "1"

AUDIO_FEATURE = datasets.Audio(sampling_rate=SAMPLING_RATE, decode=False)
# Rows are written with a plain struct and cast to `Audio` afterwards: encoding through the `Audio`
# feature imports torchcodec in datasets 5, which the project does not require.
AUDIO_STRUCT = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}

# --------------------------------------------------------------------------------------------------
# Reports and errors


class CorpusError(ValueError):
    """A corpus on disk does not match what the loader expects; the message names the file and the fix."""


@dataclass
class LoadReport:
    """What a loader read, kept and dropped, and why. Counts only; nothing here is needed to train."""

    corpus: str
    kept: int = 0
    label_counts: dict = field(default_factory=dict)  # kept rows per class name
    source_label_counts: dict = field(default_factory=dict)  # rows per raw label / emotion code, before mapping
    dropped: dict = field(default_factory=dict)  # reason -> count
    dropped_examples: dict = field(default_factory=dict)  # reason -> first few ids/paths
    notes: dict = field(default_factory=dict)  # quirks handled without dropping anything -> count
    duplicates: list = field(default_factory=list)  # groups of identical rows (kept), by location

    def drop(self, reason: str, item: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        examples = self.dropped_examples.setdefault(reason, [])
        if len(examples) < 5:
            examples.append(item)

    def note(self, what: str, count: int = 1) -> None:
        if count:
            self.notes[what] = self.notes.get(what, 0) + count

    def summary(self) -> str:
        parts = [f"{self.corpus}: kept {self.kept} rows {self.label_counts}"]
        for reason, count in self.dropped.items():
            parts.append(f"dropped {count} ({reason}; e.g. {self.dropped_examples.get(reason, [])[:3]})")
        for what, count in self.notes.items():
            parts.append(f"{what}: {count}")
        return "; ".join(parts)

    def log(self) -> None:
        logger.info(self.summary())


def first_few(items: Sequence, n: int = 5) -> str:
    shown = ", ".join(repr(x) for x in list(items)[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def build_dataset(generator: Callable, features: datasets.Features, fingerprint: str, cache_dir) -> datasets.Dataset:
    """`Dataset.from_generator` keyed by our own content fingerprint, so a second load is a cache hit."""
    try:
        dataset = datasets.Dataset.from_generator(
            generator, features=features, cache_dir=None if cache_dir is None else os.fspath(cache_dir),
            fingerprint=fingerprint,
        )
    except datasets.exceptions.DatasetGenerationError as err:
        # Our own errors are raised inside the generator; show them, not the builder's wrapper.
        if isinstance(err.__cause__, (CorpusError, FileNotFoundError)):
            raise err.__cause__ from None
        raise
    if "audio" in dataset.column_names:
        dataset = dataset.cast_column("audio", AUDIO_FEATURE)
    return dataset


def dataset_fingerprint(*parts) -> str:
    digest = hashlib.sha256()
    for part in (LOADER_VERSION, *parts):
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def audio_duration(path_or_bytes, name: str) -> float:
    """Duration in seconds from the file header (no decoding); CorpusError naming the file if unreadable."""
    import soundfile

    try:
        info = soundfile.info(io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes)
    except (RuntimeError, soundfile.LibsndfileError, TypeError, ValueError) as err:
        raise CorpusError(f"{name}: unreadable audio ({err})") from err
    if info.frames <= 0 or info.samplerate <= 0:
        raise CorpusError(f"{name}: the audio has no samples")
    return info.frames / info.samplerate


def read_text_file(path: Path, report: LoadReport) -> str:
    """UTF-8, falling back to cp1252 (IEMOCAP and MELD both contain stray Windows-1252 bytes).

    utf-8-sig: a byte-order mark (Excel's "CSV UTF-8" writes one) is dropped instead of becoming part of the
    first column's name, which would then not be found."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        report.note("files with non-UTF-8 bytes (read as cp1252)")
        return raw.decode("cp1252", errors="replace")
