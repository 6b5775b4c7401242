"""IEMOCAP_full_release on disk -> `datasets.Dataset` (layout, quirks and protocols: docs/method.md §4)."""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import datasets

from ..configuration_mer import IEMOCAP_4CLASS_LABELS
from .common import (
    AUDIO_STRUCT,
    CorpusError,
    LoadReport,
    audio_duration,
    build_dataset,
    dataset_fingerprint,
    first_few,
    read_text_file,
)

logger = logging.getLogger(__name__)

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
        IEMOCAP_4CLASS_LABELS,
        {"neu": "neutral", "hap": "happy", "exc": "happy", "sad": "sad", "ang": "angry"},
    ),
    "4class_no_exc": (
        IEMOCAP_4CLASS_LABELS,
        {"neu": "neutral", "hap": "happy", "sad": "sad", "ang": "angry"},
    ),
    "6class": (
        (*IEMOCAP_4CLASS_LABELS, "excited", "frustrated"),
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
    for line_number, line in enumerate(read_text_file(path, report).splitlines(), start=1):
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
    for line in read_text_file(path, report).splitlines():
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
        "audio": AUDIO_STRUCT,
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
            duration = audio_duration(row["audio_path"], row["audio_path"])
        except CorpusError as err:
            bad.append(str(err))
            continue
        out = {k: v for k, v in row.items() if k not in ("audio_path", "audio_stat")}
        yield {**out, "audio": {"bytes": None, "path": row["audio_path"]}, "duration": duration}
    if bad:
        raise CorpusError(
            f"IEMOCAP: {len(bad)} audio file(s) are empty or cannot be read: {first_few(bad, 3)}. "
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
                f"Session*/sentences/wav/<dialog>/: {first_few(missing)}. Restore the files, or pass "
                "on_missing='skip' to leave them out (they are then counted in the report)."
            )
        for utterance_id in missing:
            report.drop("WAV file missing", utterance_id)
        logger.warning("IEMOCAP: skipped %d labelled utterance(s) with no WAV: %s", len(missing), first_few(missing))
    if not rows:
        raise CorpusError(f"IEMOCAP: no utterance under {str(root)!r} has a label of protocol {protocol!r}.")

    fingerprint = dataset_fingerprint("iemocap", str(root), protocol, class_names, label_map, keep_tags, list(sessions), rows)
    dataset = build_dataset(lambda: _generate_iemocap_rows(rows), _iemocap_features(class_names), fingerprint,
                             cache_dir)
    report.kept = len(dataset)
    report.label_counts = dict(Counter(row["label"] for row in rows))
    report.log()
    empty = report.notes.get("labelled utterances without a transcript line (text left empty)", 0)
    if empty:
        logger.warning("IEMOCAP: %d labelled utterance(s) have no transcript line; their text is empty, which "
                       "text models cannot use (filter them or restore the transcription files).", empty)
    return (dataset, report) if return_report else dataset
