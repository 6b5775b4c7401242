"""Corpora on disk -> `datasets.Dataset`, and speaker-independent folds over them.

Training-side only (never imported by the shipped model files). Every dataset this module returns has
the same core columns: `audio` (`datasets.Audio(sampling_rate=16000, decode=False)`, so values are
`{"bytes", "path"}` and nothing needs ffmpeg or torchcodec; decode with `audio_io_mer.load_audio`),
`text`, `label` (`ClassLabel`), `speaker` and `duration` (seconds, for length grouping). Text-only
corpora have no `audio` column.

Nothing is dropped silently: every filter counts what it removed, logs it, and the counts come back
in a `LoadReport` (`return_report=True`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np

from .demo import load_demo  # noqa: F401  (the bundled corpus, beside the other loaders)

logger = logging.getLogger(__name__)

SAMPLING_RATE = 16000
# Bump when the rows a loader yields change, so old cache entries are not reused.
LOADER_VERSION = "1"

AUDIO_FEATURE = datasets.Audio(sampling_rate=SAMPLING_RATE, decode=False)
# Rows are written with a plain struct and cast to `Audio` afterwards: encoding through the `Audio`
# feature imports torchcodec in datasets 5, which the project does not require.
_AUDIO_STRUCT = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}

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


def _first_few(items: Sequence, n: int = 5) -> str:
    shown = ", ".join(repr(x) for x in list(items)[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def _build_dataset(generator: Callable, features: datasets.Features, fingerprint: str, cache_dir) -> datasets.Dataset:
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


def _fingerprint(*parts) -> str:
    digest = hashlib.sha256()
    for part in (LOADER_VERSION, *parts):
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def _audio_duration(path_or_bytes, name: str) -> float:
    """Duration in seconds from the file header (no decoding); CorpusError naming the file if unreadable."""
    import soundfile

    try:
        info = soundfile.info(io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes)
    except (RuntimeError, soundfile.LibsndfileError, TypeError, ValueError) as err:
        raise CorpusError(f"{name}: unreadable audio ({err})") from err
    if info.frames <= 0 or info.samplerate <= 0:
        raise CorpusError(f"{name}: the audio has no samples")
    return info.frames / info.samplerate


def _read_text_file(path: Path, report: LoadReport) -> str:
    """UTF-8, falling back to cp1252 (IEMOCAP and MELD both contain stray Windows-1252 bytes)."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        report.note("files with non-UTF-8 bytes (read as cp1252)")
        return raw.decode("cp1252", errors="replace")


# --------------------------------------------------------------------------------------------------
# IEMOCAP

# Raw emotion codes of the EmoEvaluation summary lines -> readable names used by the "all" protocol.
IEMOCAP_CODE_NAMES = {
    "neu": "neutral", "hap": "happy", "exc": "excited", "sad": "sad", "ang": "angry",
    "fru": "frustrated", "sur": "surprised", "fea": "fearful", "dis": "disgusted", "oth": "other",
    "xxx": "no_agreement",
}

# protocol -> (class names in ClassLabel order, {code: class name}); codes absent from the mapping are
# dropped and counted. "6class" is the common 6-way setting of the dialogue-ERC literature (happy and
# excited kept apart, frustrated added).
IEMOCAP_PROTOCOLS = {
    "4class": (
        ("neutral", "happy", "sad", "angry"),
        {"neu": "neutral", "hap": "happy", "exc": "happy", "sad": "sad", "ang": "angry"},
    ),
    "4class_no_exc": (
        ("neutral", "happy", "sad", "angry"),
        {"neu": "neutral", "hap": "happy", "sad": "sad", "ang": "angry"},
    ),
    "6class": (
        ("neutral", "happy", "sad", "angry", "excited", "frustrated"),
        {"neu": "neutral", "hap": "happy", "sad": "sad", "ang": "angry", "exc": "excited", "fru": "frustrated"},
    ),
    "all": (tuple(IEMOCAP_CODE_NAMES.values()), dict(IEMOCAP_CODE_NAMES)),
}

IEMOCAP_LAYOUT = """Expected layout (the folder USC SAIL distributes):
  IEMOCAP_full_release/
    Session1/ ... Session5/
      dialog/EmoEvaluation/<dialog>.txt      labels, e.g. Ses01F_impro01.txt
      dialog/transcriptions/<dialog>.txt     transcripts
      sentences/wav/<dialog>/<utterance>.wav 16 kHz mono audio, e.g. Ses01F_impro01/Ses01F_impro01_F000.wav
Pass the path of IEMOCAP_full_release (or of the folder that contains it)."""

_SUMMARY_LINE = re.compile(
    r"^\[\s*(?P<start>[\d.]+)\s*-\s*(?P<end>[\d.]+)\s*\]\s+(?P<id>\S+)\s+(?P<code>\S+)\s+"
    r"\[\s*(?P<v>[-\d.]+)\s*,\s*(?P<a>[-\d.]+)\s*,\s*(?P<d>[-\d.]+)\s*\]"
)
_TRANSCRIPT_LINE = re.compile(r"^(?P<id>Ses\S+)\s*\[[\d.]+\s*-\s*[\d.]+\]:\s?(?P<text>.*)$")
# Utterance ids become file names, so they may hold only these characters: no separator, no "..".
_SAFE_ID = re.compile(r"^Ses(?P<session>\d\d)[FM]_\w+_(?P<speaker>[FM])\w*$")
_TAG = re.compile(r"\[[A-Za-z_ ]+\]")  # [LAUGHTER], [BREATHING], [GARBAGE], ...


def _is_hidden(name: str) -> bool:
    # macOS copies carry "._<name>" resource forks next to every file.
    return name.startswith(".")


def _find_iemocap_root(path) -> Path:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"IEMOCAP root {str(root)!r} does not exist or is not a folder.\n{IEMOCAP_LAYOUT}")
    if not (root / "Session1").is_dir() and (root / "IEMOCAP_full_release" / "Session1").is_dir():
        root = root / "IEMOCAP_full_release"
    return root.resolve()


def _parse_emo_evaluation(path: Path, report: LoadReport) -> list[dict]:
    rows = []
    for line_number, line in enumerate(_read_text_file(path, report).splitlines(), start=1):
        if not line.startswith("["):
            continue  # "%" header, "C-"/"A-" evaluator lines, blanks
        match = _SUMMARY_LINE.match(line)
        if match is None:
            raise CorpusError(
                f"{path}:{line_number}: cannot parse the label line {line!r}. Expected "
                "'[start - end]<TAB>utterance_id<TAB>code<TAB>[valence, arousal, dominance]'; "
                "restore the file from the original release."
            )
        utterance_id = match["id"]
        if _SAFE_ID.match(utterance_id) is None:
            raise CorpusError(
                f"{path}:{line_number}: utterance id {utterance_id!r} is not an IEMOCAP id "
                "(SesNN[FM]_<dialog>_[FM]NNN); ids name audio files, so ones with path separators or "
                "other characters are refused to keep every path inside the corpus root."
            )
        rows.append({
            "id": utterance_id, "code": match["code"], "start": float(match["start"]), "end": float(match["end"]),
            "valence": float(match["v"]), "arousal": float(match["a"]), "dominance": float(match["d"]),
        })
    return rows


def _parse_transcriptions(path: Path, report: LoadReport) -> dict[str, str]:
    texts = {}
    for line in _read_text_file(path, report).splitlines():
        match = _TRANSCRIPT_LINE.match(line.strip())
        if match is None:
            if line.strip():
                report.note("transcript lines without id/time (e.g. bare 'M: ...')")
            continue
        texts[match["id"]] = match["text"].strip()
    return texts


def _clean_text(text: str, keep_tags: bool, report: LoadReport) -> str:
    cleaned = " ".join((text if keep_tags else _TAG.sub(" ", text)).split())
    if not cleaned and text.strip():
        # An utterance that is only "[LAUGHTER]" keeps its tag: the processor needs a non-empty transcript.
        report.note("transcripts made only of tags (tags kept)")
        return " ".join(text.split())
    return cleaned


def _iemocap_session_records(root: Path, session: int, label_map: Mapping, keep_tags: bool,
                             report: LoadReport) -> tuple[list[dict], list[str]]:
    """Parse one session's label and transcript files; returns (rows, ids whose WAV is missing)."""
    session_dir = root / f"Session{session}"
    labels_dir = session_dir / "dialog" / "EmoEvaluation"
    transcripts_dir = session_dir / "dialog" / "transcriptions"
    wav_dir = session_dir / "sentences" / "wav"
    for folder in (labels_dir, transcripts_dir, wav_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"IEMOCAP: missing folder {str(folder)!r}.\n{IEMOCAP_LAYOUT}")

    label_files = sorted(p for p in labels_dir.iterdir() if p.suffix == ".txt" and p.is_file())
    report.note("macOS '._*' files skipped", sum(_is_hidden(p.name) for p in label_files))
    label_files = [p for p in label_files if not _is_hidden(p.name)]
    if not label_files:
        raise FileNotFoundError(f"IEMOCAP: no label files (*.txt) in {str(labels_dir)!r}.\n{IEMOCAP_LAYOUT}")

    rows, missing = [], []
    for label_file in label_files:
        dialog = label_file.stem
        transcript_file = transcripts_dir / label_file.name
        texts = _parse_transcriptions(transcript_file, report) if transcript_file.is_file() else {}
        if not transcript_file.is_file():
            report.note("dialogs without a transcript file (text left empty)")
        dialog_wav_dir = wav_dir / dialog
        wav_names = set()
        if dialog_wav_dir.is_dir():
            entries = list(os.scandir(dialog_wav_dir))
            report.note("macOS '._*' files skipped", sum(_is_hidden(e.name) for e in entries))
            wav_names = {e.name: e for e in entries if e.name.endswith(".wav") and not _is_hidden(e.name)}
        labelled = _parse_emo_evaluation(label_file, report)
        labelled_ids = {r["id"] for r in labelled}
        report.note("transcribed turns without a label (e.g. *_MXX0 / *_FXX0)", len(set(texts) - labelled_ids))
        for record in labelled:
            utterance_id = record["id"]
            report.source_label_counts[record["code"]] = report.source_label_counts.get(record["code"], 0) + 1
            match = _SAFE_ID.match(utterance_id)
            if int(match["session"]) != session or utterance_id.rsplit("_", 1)[0] != dialog:
                raise CorpusError(
                    f"{label_file}: utterance {utterance_id!r} does not belong to dialog {dialog!r} of "
                    f"Session{session}; restore the file from the original release."
                )
            if record["code"] not in label_map:
                report.drop(f"code {record['code']!r} not in the protocol", utterance_id)
                continue
            wav = wav_names.get(utterance_id + ".wav")
            if wav is None:
                missing.append(utterance_id)
                continue
            if utterance_id not in texts:
                report.note("labelled utterances without a transcript line (text left empty)")
            stat = wav.stat()
            speaker_letter = match["speaker"]
            rows.append({
                "id": utterance_id,
                "audio_path": wav.path,
                "audio_stat": (stat.st_size, stat.st_mtime_ns),
                "text": _clean_text(texts.get(utterance_id, ""), keep_tags, report),
                "label": label_map[record["code"]],
                "emotion_code": record["code"],
                "session": session,
                "speaker": f"Ses{session:02d}{speaker_letter}",
                "gender": "female" if speaker_letter == "F" else "male",
                "dialog": dialog,
                "method": "impro" if dialog.split("_")[1].startswith("impro") else "script",
                **{k: record[k] for k in ("valence", "arousal", "dominance", "start", "end")},
            })
    return rows, missing


def _iemocap_features(class_names) -> datasets.Features:
    return datasets.Features({
        "id": datasets.Value("string"),
        "audio": _AUDIO_STRUCT,
        "text": datasets.Value("string"),
        "label": datasets.ClassLabel(names=list(class_names)),
        "emotion_code": datasets.Value("string"),
        "session": datasets.Value("int32"),
        "speaker": datasets.Value("string"),
        "gender": datasets.Value("string"),
        "dialog": datasets.Value("string"),
        "method": datasets.Value("string"),
        "valence": datasets.Value("float32"),
        "arousal": datasets.Value("float32"),
        "dominance": datasets.Value("float32"),
        "start": datasets.Value("float32"),
        "end": datasets.Value("float32"),
        "duration": datasets.Value("float32"),
    })


def _generate_iemocap_rows(rows: list[dict]):
    """Runs only on a cache miss: reads each WAV header for the duration, then yields the rows."""
    bad = []
    for row in rows:
        try:
            duration = _audio_duration(row["audio_path"], row["audio_path"])
        except CorpusError as err:
            bad.append(str(err))
            continue
        out = {k: v for k, v in row.items() if k not in ("audio_path", "audio_stat")}
        yield {**out, "audio": {"bytes": None, "path": row["audio_path"]}, "duration": duration}
    if bad:
        raise CorpusError(
            f"IEMOCAP: {len(bad)} audio file(s) are empty or cannot be read: {_first_few(bad, 3)}. "
            "Re-copy them from the original release."
        )


def load_iemocap(
    path,
    protocol: str = "4class",
    keep_tags: bool = True,
    on_missing: str = "error",
    cache_dir=None,
    sessions: Sequence[int] = (1, 2, 3, 4, 5),
    return_report: bool = False,
):
    """Read a local `IEMOCAP_full_release/` into a `datasets.Dataset` (one row per labelled utterance).

    protocol: "4class" (neutral, happy = hap+exc, sad, angry; 5,531 rows), "4class_no_exc" (hap only),
    "6class" (neutral, happy, sad, angry, excited, frustrated) or "all" (every code, xxx included as
    "no_agreement"). Utterances whose code the protocol does not use are dropped and counted.
    keep_tags: keep transcript tags such as "[LAUGHTER]" (False strips them).
    on_missing: "error" (default) when a labelled utterance has no WAV, or "skip" (warns with counts).
    Columns: id, audio, text, label, emotion_code, session, speaker ("Ses01F"), gender, dialog,
    method (impro/script), valence, arousal, dominance, start, end, duration.
    """
    if protocol not in IEMOCAP_PROTOCOLS:
        raise ValueError(f"Unknown IEMOCAP protocol {protocol!r}; choose one of {sorted(IEMOCAP_PROTOCOLS)}.")
    if on_missing not in ("error", "skip"):
        raise ValueError(f"on_missing must be 'error' or 'skip', got {on_missing!r}.")
    bad_sessions = [s for s in sessions if s not in (1, 2, 3, 4, 5)]
    if bad_sessions or not sessions:
        raise ValueError(f"sessions must be a non-empty subset of 1..5, got {list(sessions)}.")
    class_names, label_map = IEMOCAP_PROTOCOLS[protocol]
    root = _find_iemocap_root(path)
    missing_sessions = [s for s in sessions if not (root / f"Session{s}").is_dir()]
    if missing_sessions:
        raise FileNotFoundError(
            f"IEMOCAP: {str(root)!r} has no folder(s) {[f'Session{s}' for s in missing_sessions]}.\n{IEMOCAP_LAYOUT}"
        )

    report = LoadReport(corpus=f"IEMOCAP ({protocol})")
    rows, missing = [], []
    for session in sessions:
        session_rows, session_missing = _iemocap_session_records(root, session, label_map, keep_tags, report)
        rows.extend(session_rows)
        missing.extend(session_missing)
    if missing:
        if on_missing == "error":
            raise FileNotFoundError(
                f"IEMOCAP: {len(missing)} labelled utterance(s) have no WAV under "
                f"Session*/sentences/wav/<dialog>/: {_first_few(missing)}. Restore the files, or pass "
                "on_missing='skip' to leave them out (they are then counted in the report)."
            )
        for utterance_id in missing:
            report.drop("WAV file missing", utterance_id)
        logger.warning("IEMOCAP: skipped %d labelled utterance(s) with no WAV: %s", len(missing), _first_few(missing))
    if not rows:
        raise CorpusError(f"IEMOCAP: no utterance under {str(root)!r} has a label of protocol {protocol!r}.")

    fingerprint = _fingerprint("iemocap", str(root), protocol, class_names, label_map, keep_tags, list(sessions), rows)
    dataset = _build_dataset(lambda: _generate_iemocap_rows(rows), _iemocap_features(class_names), fingerprint,
                             cache_dir)
    report.kept = len(dataset)
    report.label_counts = dict(Counter(row["label"] for row in rows))
    report.log()
    empty = report.notes.get("labelled utterances without a transcript line (text left empty)", 0)
    if empty:
        logger.warning("IEMOCAP: %d labelled utterance(s) have no transcript line; their text is empty, which "
                       "text models cannot use (filter them or restore the transcription files).", empty)
    return (dataset, report) if return_report else dataset


# --------------------------------------------------------------------------------------------------
# Folds. Every split is by speaker, so no speaker is ever in two parts of one fold (checked).


def _split_by_speaker(dataset: datasets.Dataset, test_speakers, validation_speakers,
                      speaker_column: str = "speaker") -> datasets.DatasetDict:
    test_speakers, validation_speakers = set(test_speakers), set(validation_speakers or ())
    if test_speakers & validation_speakers:
        raise ValueError(f"Speakers {sorted(test_speakers & validation_speakers)} are in both test and validation.")
    speakers = np.asarray(dataset[speaker_column], dtype=object)
    in_test = np.isin(speakers, list(test_speakers))
    in_validation = np.isin(speakers, list(validation_speakers))
    parts = {"train": np.flatnonzero(~in_test & ~in_validation)}
    if validation_speakers:
        parts["validation"] = np.flatnonzero(in_validation)
    parts["test"] = np.flatnonzero(in_test)
    for name, indices in parts.items():
        if len(indices) == 0:
            raise ValueError(f"The {name} split of this fold is empty (test speakers {sorted(test_speakers)}, "
                             f"validation speakers {sorted(validation_speakers)}).")
    return datasets.DatasetDict({name: dataset.select(indices) for name, indices in parts.items()})


def _session_speakers(dataset) -> dict[int, list[str]]:
    by_session: dict[int, set] = {}
    for session, speaker in zip(dataset["session"], dataset["speaker"], strict=True):
        by_session.setdefault(int(session), set()).add(speaker)
    return {s: sorted(v) for s, v in sorted(by_session.items())}


def _check_column(dataset, column: str, purpose: str) -> None:
    if column not in dataset.column_names:
        raise ValueError(f"{purpose} needs a {column!r} column; the dataset has {dataset.column_names}.")


def leave_one_session_out(dataset: datasets.Dataset, validation_speakers="auto") -> dict[int, datasets.DatasetDict]:
    """The 5 standard IEMOCAP folds: {test session: DatasetDict(train, validation, test)}.

    Validation is never drawn from the test session. validation_speakers: "auto" (one speaker of the
    next session, female for odd test sessions, male for even, so training keeps 7 speakers), None
    (no validation split), a mapping {test session: [speakers]}, or a callable(test_session) -> speakers.
    """
    _check_column(dataset, "session", "leave_one_session_out")
    by_session = _session_speakers(dataset)
    sessions = list(by_session)
    folds = {}
    for position, session in enumerate(sessions):
        if validation_speakers == "auto":
            following = by_session[sessions[(position + 1) % len(sessions)]]
            wanted = "F" if session % 2 else "M"
            chosen = [s for s in following if s.endswith(wanted)] or following[:1]
            validation = chosen[:1]
        elif validation_speakers is None:
            validation = []
        elif callable(validation_speakers):
            validation = list(validation_speakers(session))
        else:
            validation = list(validation_speakers.get(session, ()))
        leaked = set(validation) & set(by_session[session])
        if leaked:
            raise ValueError(f"Validation speakers {sorted(leaked)} belong to test session {session}; "
                             "model selection must not look at the test session.")
        folds[session] = _split_by_speaker(dataset, by_session[session], validation)
    return folds


def session5_split(dataset: datasets.Dataset, validation_speakers="auto") -> datasets.DatasetDict:
    """Train on sessions 1-4, test on session 5 (validation as in `leave_one_session_out`)."""
    return leave_one_session_out(dataset, validation_speakers)[5]


def leave_one_speaker_out(dataset: datasets.Dataset, validation_speakers="auto") -> dict[str, datasets.DatasetDict]:
    """10 IEMOCAP folds: {test speaker: DatasetDict(train, validation, test)}.

    "auto" validates on the other speaker of the test speaker's session (the usual protocol: train on
    the four other sessions); None gives no validation split; a mapping {test speaker: [speakers]} or a
    callable(test_speaker) -> speakers chooses explicitly.
    """
    _check_column(dataset, "session", "leave_one_speaker_out")
    by_session = _session_speakers(dataset)
    folds = {}
    for speakers in by_session.values():
        for speaker in speakers:
            if validation_speakers == "auto":
                validation = [s for s in speakers if s != speaker]
            elif validation_speakers is None:
                validation = []
            elif callable(validation_speakers):
                validation = list(validation_speakers(speaker))
            else:
                validation = list(validation_speakers.get(speaker, ()))
            # With "auto" the training set drops the whole session, so no session is in two splits.
            held_out = speakers if validation_speakers == "auto" else [speaker]
            train_excluded = set(held_out) | set(validation)
            fold = _split_by_speaker(dataset, [speaker], sorted(train_excluded - {speaker}))
            folds[speaker] = fold
    return folds


def leave_speakers_out(dataset: datasets.Dataset, n_folds: int = 5, n_validation_speakers: int = 1,
                       seed: int = 0, speaker_column: str = "speaker") -> dict[int, datasets.DatasetDict]:
    """Speaker-independent folds for any corpus with a speaker column: {fold: DatasetDict}.

    Speakers are shuffled with `seed` and dealt round-robin into `n_folds` test groups; validation
    takes `n_validation_speakers` speakers of the next group; training gets everyone else.
    """
    _check_column(dataset, speaker_column, "leave_speakers_out")
    speakers = sorted(set(dataset[speaker_column]))
    if n_folds < 2 or n_folds > len(speakers):
        raise ValueError(f"n_folds must be between 2 and the number of speakers ({len(speakers)}), got {n_folds}.")
    order = np.random.default_rng(seed).permutation(len(speakers))
    groups = [[speakers[i] for i in order[fold::n_folds]] for fold in range(n_folds)]
    folds = {}
    for fold, test in enumerate(groups):
        following = groups[(fold + 1) % n_folds]
        if n_validation_speakers > len(following):
            raise ValueError(f"n_validation_speakers={n_validation_speakers} exceeds the {len(following)} "
                             "speakers of a fold group; lower it or use fewer folds.")
        folds[fold] = _split_by_speaker(dataset, test, following[:n_validation_speakers], speaker_column)
    return folds


# --------------------------------------------------------------------------------------------------
# Any corpus: manifest (CSV / JSONL), audiofolder (metadata.csv), or an existing datasets.Dataset

_AUDIO_COLUMN_GUESSES = ("audio", "path", "file_name", "audio_path", "file", "filepath", "wav")


def _read_manifest(path: Path, report: LoadReport) -> list[dict]:
    if path.suffix.lower() in (".jsonl", ".json"):
        text = _read_text_file(path, report)
        if path.suffix.lower() == ".json":
            rows = json.loads(text)
        else:
            rows = []
            for line_number, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise CorpusError(f"{path}:{line_number}: invalid JSON ({err}).") from err
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise CorpusError(f"{path}: expected one JSON object per line (or a JSON list of objects).")
        return rows
    if path.suffix.lower() in (".csv", ".tsv"):
        text = _read_text_file(path, report)
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        return list(csv.DictReader(io.StringIO(text), delimiter=delimiter))
    raise ValueError(f"{path}: unsupported manifest type {path.suffix!r}; use .csv, .tsv, .jsonl or .json.")


def _resolve_inside(root: Path, relative: str) -> str | None:
    """Absolute path of `relative` under `root`, or None if it escapes the root (lexically: '..', absolute)."""
    candidate = os.path.normpath(os.path.join(root, relative))
    return candidate if candidate == str(root) or candidate.startswith(str(root) + os.sep) else None


def _label_encoder(raw_labels: Sequence[str], label_names, label_mapping, source: str):
    """Returns (class names, {raw label: class name or None = drop}); errors list every unknown label."""
    mapping = dict(label_mapping or {})
    if label_names is None:
        targets = {mapping.get(label, label) for label in raw_labels}
        label_names = sorted(t for t in targets if t is not None)
    label_names = list(label_names)
    if len(set(label_names)) != len(label_names):
        raise ValueError(f"label_names has duplicates: {label_names}.")
    counts = Counter(raw_labels)
    unknown = {}
    resolved = {}
    for label in counts:
        target = mapping[label] if label in mapping else label
        if target is not None and target not in label_names:
            unknown[label] = counts[label]
        resolved[label] = target
    if unknown:
        raise CorpusError(
            f"{source}: label(s) not in the class names {label_names}: "
            f"{dict(sorted(unknown.items(), key=lambda kv: -kv[1]))} (rows per label). Map them with "
            "label_mapping={raw: class name}, or to None to drop them (they are then counted)."
        )
    return label_names, resolved


def _infer_extra_features(rows: list[dict], columns: list[str]) -> dict:
    import pyarrow as pa

    if not columns:
        return {}
    table = pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in rows])
    return dict(datasets.Features.from_arrow_schema(table.schema))


def load_corpus(
    source,
    *,
    audio_column: str | None = "auto",
    text_column: str | None = "text",
    label_column: str = "label",
    speaker_column: str | None = "speaker",
    label_names: Sequence[str] | None = None,
    label_mapping: Mapping[str, str | None] | None = None,
    audio_root=None,
    on_missing: str = "error",
    name: str | None = None,
    cache_dir=None,
    return_report: bool = False,
):
    """Any emotion corpus as a `datasets.Dataset` with the project's columns.

    source: a .csv/.tsv/.jsonl/.json manifest (audio paths relative to its folder, or to `audio_root`),
    an audiofolder directory with `metadata.csv` (`file_name` column), or a `datasets.Dataset`.
    Column names are mapped onto `audio`, `text`, `label`, `speaker`; `audio_column="auto"` picks the
    first of "audio", "path", "file_name", ... present, and a corpus with none is text-only (no audio
    column, e.g. MELD). `text_column=None` gives an audio-only corpus (empty text).
    Labels: class names come from `label_names` (ClassLabel order) or, if None, the sorted labels of the
    data; `label_mapping` maps raw labels onto them (e.g. RAVDESS "calm" -> "neutral"), None drops a
    label (counted in the report); any other label not in the class names is an error.
    Audio paths must stay inside the corpus root; missing files are an error unless on_missing="skip".
    A `duration` column is kept if present, else read from each file's header.
    """
    if on_missing not in ("error", "skip"):
        raise ValueError(f"on_missing must be 'error' or 'skip', got {on_missing!r}.")
    report = LoadReport(corpus=name or ("datasets.Dataset" if isinstance(source, datasets.Dataset) else str(source)))
    source_label = report.corpus
    if isinstance(source, datasets.Dataset):
        rows, source_features, audio_column, fingerprint_source = _rows_from_dataset(source, audio_column, label_column)
        root = None
    else:
        rows, root, audio_column, fingerprint_source = _rows_from_manifest(source, audio_column, audio_root, report)
        source_features = None
        report.corpus = source_label = name or fingerprint_source[0]

    columns = list(rows[0])
    if audio_column == "auto":
        audio_column = next((c for c in _AUDIO_COLUMN_GUESSES if c in columns), None)
        if audio_column is None:
            logger.info("%s: no audio column among %s: loading a text-only corpus.", source_label, columns)
    for purpose, column in (("audio", audio_column), ("text", text_column), ("label", label_column),
                            ("speaker", speaker_column)):
        if column is not None and column not in columns:
            if purpose == "speaker" and speaker_column == "speaker":
                logger.warning("%s: no 'speaker' column: speaker-independent folds are unavailable.", source_label)
                speaker_column = None
                continue
            raise CorpusError(
                f"{source_label}: no {purpose} column {column!r}; the columns are {columns}. "
                f"Pass {purpose}_column=<name>."
            )

    raw_labels = [str(row[label_column]) for row in rows]
    class_names, resolved = _label_encoder(raw_labels, label_names, label_mapping, source_label)
    report.source_label_counts = dict(Counter(raw_labels))

    standard = {c for c in (audio_column, text_column, label_column, speaker_column) if c is not None}
    extra_columns = [c for c in columns if c not in standard and c != "duration"
                     and c not in ("audio", "text", "label", "speaker")]
    kept, missing = [], []
    for index, (row, raw_label) in enumerate(zip(rows, raw_labels, strict=True)):
        item = f"row {index}"
        target = resolved[raw_label]
        if target is None:
            report.drop(f"label {raw_label!r} mapped to None", item)
            continue
        out = {"label": target}
        if audio_column is not None:
            out["audio"] = _audio_value(row[audio_column], root, item, source_label)
            path = out["audio"]["path"]
            if out["audio"]["bytes"] is None and not os.path.isfile(path):
                missing.append(path)
                continue
        out["text"] = "" if text_column is None or row[text_column] is None else str(row[text_column])
        if speaker_column is not None:
            out["speaker"] = str(row[speaker_column])
        if "duration" in row and row["duration"] not in (None, ""):
            out["duration"] = float(row["duration"])
        for column in extra_columns:
            out[column] = row.get(column)
        kept.append(out)
    if missing:
        if on_missing == "error":
            raise FileNotFoundError(
                f"{source_label}: {len(missing)} audio file(s) are missing: {_first_few(missing)}. Fix the "
                "paths (relative to the manifest folder or audio_root), or pass on_missing='skip'."
            )
        for path in missing:
            report.drop("audio file missing", path)
        logger.warning("%s: skipped %d row(s) whose audio is missing: %s", source_label, len(missing), _first_few(missing))
    if not kept:
        raise CorpusError(f"{source_label}: no rows left after label mapping and missing-file checks.")

    has_audio = audio_column is not None
    features = _corpus_features(kept, class_names, has_audio, speaker_column is not None, extra_columns,
                                source_features)

    # Durations read from headers depend on the files, so their size/mtime join the cache key.
    file_stats = [
        (lambda st: (st.st_size, st.st_mtime_ns))(os.stat(row["audio"]["path"]))
        for row in kept if has_audio and row["audio"]["bytes"] is None and "duration" not in row
    ]
    fingerprint = _fingerprint("corpus", fingerprint_source, audio_column, text_column, label_column,
                               speaker_column, class_names, resolved, on_missing, str(root), file_stats)
    dataset = _build_dataset(lambda: _generate_corpus_rows(kept, features), features, fingerprint, cache_dir)
    report.kept = len(dataset)
    report.label_counts = dict(Counter(row["label"] for row in kept))
    report.log()
    return (dataset, report) if return_report else dataset


def _rows_from_manifest(source, audio_column, audio_root, report: LoadReport):
    """(rows, audio root, audio column, fingerprint parts) of a manifest file or an audiofolder."""
    path = Path(source).expanduser()
    if path.is_dir():
        manifest = path / "metadata.csv"
        if not manifest.is_file():
            raise FileNotFoundError(
                f"{str(path)!r} is a folder without metadata.csv. An audiofolder corpus needs "
                "metadata.csv with a file_name column (audio paths relative to the folder) plus "
                "text and label columns; or pass the path of a CSV/JSONL manifest."
            )
        if audio_column == "auto":
            audio_column = "file_name"
    elif path.is_file():
        manifest = path
    else:
        raise FileNotFoundError(f"Corpus manifest {str(path)!r} does not exist.")
    rows = _read_manifest(manifest, report)
    if not rows:
        raise CorpusError(f"{manifest}: the manifest has no rows.")
    root = Path(audio_root).expanduser().resolve() if audio_root is not None else manifest.parent.resolve()
    return rows, root, audio_column, [str(manifest.resolve()), hashlib.sha256(manifest.read_bytes()).hexdigest()]


def _corpus_features(rows, class_names, has_audio: bool, has_speaker: bool, extra_columns, source_features):
    features = {}
    if has_audio:
        features["audio"] = _AUDIO_STRUCT
    features["text"] = datasets.Value("string")
    features["label"] = datasets.ClassLabel(names=class_names)
    if has_speaker:
        features["speaker"] = datasets.Value("string")
    if has_audio or any("duration" in row for row in rows):
        features["duration"] = datasets.Value("float32")
    if source_features is not None:
        features.update({c: source_features[c] for c in extra_columns})
    else:
        features.update(_infer_extra_features(rows, extra_columns))
    return datasets.Features(features)


def _audio_value(value, root: Path | None, item: str, source_label: str) -> dict:
    """Manifest/dataset audio cell -> {"bytes", "path"} with an absolute path kept inside `root`."""
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return {"bytes": value["bytes"], "path": value.get("path")}
        value = value.get("path")
    if value is None or value == "":
        raise CorpusError(f"{source_label}: {item} has no audio path.")
    if root is None:
        return {"bytes": None, "path": os.path.abspath(os.fspath(value))}
    resolved = _resolve_inside(root, os.fspath(value))
    if resolved is None:
        raise CorpusError(
            f"{source_label}: {item} audio path {value!r} escapes the corpus root {str(root)!r}. Use paths "
            "relative to the manifest folder (or pass audio_root=<folder holding every file>)."
        )
    return {"bytes": None, "path": resolved}


def _rows_from_dataset(dataset: datasets.Dataset, audio_column, label_column: str):
    """Rows of an existing dataset with undecoded audio and the label column as strings."""
    if audio_column == "auto":
        audio_column = next((c for c in _AUDIO_COLUMN_GUESSES if c in dataset.column_names), None)
    if audio_column is not None and isinstance(dataset.features.get(audio_column), datasets.Audio):
        dataset = dataset.cast_column(audio_column, datasets.Audio(decode=False))
    rows = dataset.to_list()
    label_feature = dataset.features.get(label_column)
    if isinstance(label_feature, datasets.ClassLabel):
        for row in rows:
            if row[label_column] is not None:
                row[label_column] = label_feature.int2str(row[label_column])
    return rows, dict(dataset.features), audio_column, ["dataset", dataset._fingerprint]


def _generate_corpus_rows(rows: list[dict], features: Mapping):
    bad = []
    for index, row in enumerate(rows):
        out = {column: row.get(column) for column in features}
        if "audio" in features and row.get("duration") is None:
            audio = row["audio"]
            try:
                out["duration"] = _audio_duration(audio["bytes"] if audio["bytes"] is not None else audio["path"],
                                                  audio["path"] or f"row {index}")
            except CorpusError as err:
                bad.append(str(err))
                continue
        yield out
    if bad:
        raise CorpusError(f"{len(bad)} audio file(s) are empty or cannot be read: {_first_few(bad, 3)}. "
                          "Replace or remove them.")
