"""Corpora on disk -> `datasets.Dataset`, and speaker-independent folds over them.

Training-side only (never imported by the shipped model files). Every dataset this module returns has
the same core columns: `audio` (`datasets.Audio(sampling_rate=16000, decode=False)`, so values are
`{"bytes", "path"}` and nothing needs ffmpeg or torchcodec; decode with `audio_io_mer.load_audio`),
`text`, `label` (`ClassLabel`), `speaker` and `duration` (seconds, for length grouping). Text-only
corpora have no `audio` column.

Nothing is dropped silently: every filter counts what it removed, logs it, and the counts come back
in a `LoadReport` (`return_report=True`).
"""

from .common import CorpusError, LoadReport
from .demo import load_demo
from .folds import leave_one_session_out, leave_one_speaker_out, leave_speakers_out, session5_split
from .iemocap import load_iemocap
from .manifest import load_corpus

__all__ = [
    "CorpusError",
    "LoadReport",
    "leave_one_session_out",
    "leave_one_speaker_out",
    "leave_speakers_out",
    "load_corpus",
    "load_demo",
    "load_iemocap",
    "session5_split",
]
