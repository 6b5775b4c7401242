"""Any corpus: a manifest (CSV / JSONL), an audiofolder (metadata.csv), or an existing datasets.Dataset."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import datasets

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

_AUDIO_COLUMN_GUESSES = ("audio", "path", "file_name", "audio_path", "file", "filepath", "wav")


def _read_manifest(path: Path, report: LoadReport) -> list[dict]:
    if path.suffix.lower() in (".jsonl", ".json"):
        text = read_text_file(path, report)
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
        text = read_text_file(path, report)
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
                f"{source_label}: {len(missing)} audio file(s) are missing: {first_few(missing)}. Fix the "
                "paths (relative to the manifest folder or audio_root), or pass on_missing='skip'."
            )
        for path in missing:
            report.drop("audio file missing", path)
        logger.warning("%s: skipped %d row(s) whose audio is missing: %s", source_label, len(missing), first_few(missing))
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
    fingerprint = dataset_fingerprint("corpus", fingerprint_source, audio_column, text_column, label_column,
                               speaker_column, class_names, resolved, on_missing, str(root), file_stats)
    dataset = build_dataset(lambda: _generate_corpus_rows(kept, features), features, fingerprint, cache_dir)
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
        features["audio"] = AUDIO_STRUCT
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
                out["duration"] = audio_duration(audio["bytes"] if audio["bytes"] is not None else audio["path"],
                                                  audio["path"] or f"row {index}")
            except CorpusError as err:
                bad.append(str(err))
                continue
        yield out
    if bad:
        raise CorpusError(f"{len(bad)} audio file(s) are empty or cannot be read: {first_few(bad, 3)}. "
                          "Replace or remove them.")
