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

# audio_filepath: NeMo manifests (one JSON object per line with audio_filepath, text, duration).
_AUDIO_COLUMN_GUESSES = ("audio", "path", "file_name", "audio_filepath", "audio_path", "file", "filepath", "wav")
_TEXT_COLUMN_GUESSES = ("text", "transcript", "transcription", "sentence", "utterance", "Utterance")


def _read_manifest(path: Path, report: LoadReport) -> tuple[list[dict], list[str]]:
    """(rows, where each row is in the file, e.g. "line 7"), for error messages a user can jump to."""
    if path.suffix.lower() in (".jsonl", ".json"):
        text = read_text_file(path, report)
        if path.suffix.lower() == ".json":
            rows = json.loads(text)
            locations = [f"item {index}" for index in range(len(rows))] if isinstance(rows, list) else []
        else:
            rows, locations = [], []
            for line_number, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise CorpusError(f"{path}:{line_number}: invalid JSON ({err}).") from err
                    locations.append(f"line {line_number}")
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise CorpusError(f"{path}: expected one JSON object per line (or a JSON list of objects).")
        return rows, locations
    if path.suffix.lower() in (".csv", ".tsv"):
        text = read_text_file(path, report)
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
        rows, locations, ragged = [], [], []
        for row in reader:
            rows.append(row)
            locations.append(f"line {reader.line_num}")
            # csv fills missing cells with None and files extra ones under the key None: either way the
            # cells no longer line up with the header, and a label or speaker would silently become 'None'.
            if None in row or any(value is None for value in row.values()):
                ragged.append(f"line {reader.line_num}")
        if ragged:
            raise CorpusError(
                f"{path}: {len(ragged)} row(s) do not have the header's {len(reader.fieldnames or [])} cells: "
                f"{first_few(ragged)}. Fix those lines (a missing or extra {delimiter!r}, or an unquoted "
                f"{delimiter!r} inside a transcript: quote the cell)."
            )
        return rows, locations
    raise ValueError(f"{path}: unsupported manifest type {path.suffix!r}; use .csv, .tsv, .jsonl or .json.")


def _clean_cells(rows, locations, column: str, purpose: str, source_label: str) -> list[str]:
    """The stripped string cells of `column`; empty cells, and floats in a label column, are errors naming rows."""
    values, empty, floats = [], [], []
    for row, where in zip(rows, locations, strict=True):
        value = row.get(column)
        if isinstance(value, float) and purpose == "label":
            floats.append(f"{where} ({value!r})")
        text = "" if value is None else str(value).strip()
        if not text:
            empty.append(where)
        values.append(text)
    if floats:
        raise CorpusError(
            f"{source_label}: the {purpose} column {column!r} holds numbers, not classes, e.g. {first_few(floats)}. "
            "Emotion labels are classes: use class names (\"angry\") or integer ids; a continuous rating "
            "(valence, arousal) is not a class label."
        )
    if empty:
        raise CorpusError(
            f"{source_label}: {len(empty)} row(s) have an empty {purpose} cell ({column!r}): {first_few(empty)}. "
            "Fill them in, or remove those rows."
        )
    return values


def _merge_case_variants(labels: list[str], label_names, label_mapping, report: LoadReport,
                         source_label: str) -> list[str]:
    """Labels that differ only in case ('Angry', 'angry') are one class: each group takes one spelling.

    The spelling kept is the one the caller named (label_names, then label_mapping keys), else the most
    frequent; the merge is logged and noted in the report, so it never happens unseen."""
    counts = Counter(labels)
    groups: dict[str, list[str]] = {}
    for label in counts:
        groups.setdefault(label.casefold(), []).append(label)
    named = set(label_names or ()) | set(label_mapping or ())
    chosen = {}
    for spellings in groups.values():
        if len(spellings) < 2:
            continue
        keep = min(spellings, key=lambda spelling: (spelling not in named, -counts[spelling], spelling))
        chosen.update({spelling: keep for spelling in spellings if spelling != keep})
    if not chosen:
        return labels
    for spelling, keep in chosen.items():
        report.note(f"label {spelling!r} merged into {keep!r} (same label, other case)", counts[spelling])
    logger.warning("%s: labels that differ only in case were merged: %s (rows per spelling: %s).", source_label,
                   chosen, {spelling: counts[spelling] for spelling in chosen})
    return [chosen.get(label, label) for label in labels]


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

    source: a .csv/.tsv/.jsonl/.json manifest (audio paths relative to its folder, or to `audio_root`;
    absolute paths, '..' and symlinks are fine), a NeMo manifest (JSONL with `audio_filepath`, `text`,
    `duration`), an audiofolder directory with `metadata.csv` (`file_name` column), a `datasets.Dataset` or
    `DatasetDict`, or a folder written by their `save_to_disk`. The splits of a DatasetDict are kept in a
    `split` column ("train", "validation", "test"), which `experiment` uses as given with `--cv none`.
    Column names are mapped onto `audio`, `text`, `label`, `speaker`; `audio_column="auto"` picks the
    first of "audio", "path", "file_name", "audio_filepath", ... present, and a corpus with none is text-only
    (no audio column, e.g. MELD). `text_column=None` gives an audio-only corpus (empty text); "auto" takes
    the first of "text", "transcript", ... present, or none.
    Labels: stripped; spellings that differ only in case are merged (noted in the report); empty cells,
    short CSV rows and float labels are errors naming the rows. Class names come from `label_names`
    (ClassLabel order) or, if None, the sorted labels of the data; `label_mapping` maps raw labels onto them
    (e.g. RAVDESS "calm" -> "neutral"), None drops a label (counted in the report); any other label not in
    the class names is an error. Exact duplicate rows are kept and listed in the report.
    Missing audio files are an error unless on_missing="skip".
    A `duration` column is kept if present, else read from each file's header.
    """
    if on_missing not in ("error", "skip"):
        raise ValueError(f"on_missing must be 'error' or 'skip', got {on_missing!r}.")
    source = _from_disk(source)
    if isinstance(source, datasets.DatasetDict):
        source = _with_split_column(source)
    report = LoadReport(corpus=name or ("datasets.Dataset" if isinstance(source, datasets.Dataset) else str(source)))
    source_label = report.corpus
    if isinstance(source, datasets.Dataset):
        rows, source_features, audio_column, fingerprint_source = _rows_from_dataset(source, audio_column, label_column)
        locations = [f"row {index}" for index in range(len(rows))]
        root = None
        if not rows:
            raise CorpusError(f"{source_label}: the dataset has no rows.")
    else:
        rows, locations, root, audio_column, fingerprint_source = _rows_from_manifest(source, audio_column,
                                                                                      audio_root, report)
        source_features = None
        report.corpus = source_label = name or fingerprint_source[0]

    columns = list(rows[0])
    if audio_column == "auto":
        audio_column = next((c for c in _AUDIO_COLUMN_GUESSES if c in columns), None)
        if audio_column is None:
            logger.info("%s: no audio column among %s: loading a text-only corpus.", source_label, columns)
    if text_column == "auto":
        text_column = next((c for c in _TEXT_COLUMN_GUESSES if c in columns), None)
        if text_column is None:
            logger.info("%s: no text column among %s: loading an audio-only corpus (empty transcripts).",
                        source_label, columns)
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

    raw_labels = _clean_cells(rows, locations, label_column, "label", source_label)
    raw_labels = _merge_case_variants(raw_labels, label_names, label_mapping, report, source_label)
    speakers = (_clean_cells(rows, locations, speaker_column, "speaker", source_label)
                if speaker_column is not None else None)
    class_names, resolved = _label_encoder(raw_labels, label_names, label_mapping, source_label)
    report.source_label_counts = dict(Counter(raw_labels))

    standard = {c for c in (audio_column, text_column, label_column, speaker_column) if c is not None}
    extra_columns = [c for c in columns if c not in standard and c != "duration"
                     and c not in ("audio", "text", "label", "speaker")]
    kept, kept_locations, missing = [], [], []
    for index, (row, raw_label, where) in enumerate(zip(rows, raw_labels, locations, strict=True)):
        target = resolved[raw_label]
        if target is None:
            report.drop(f"label {raw_label!r} mapped to None", where)
            continue
        out = {"label": target}
        if audio_column is not None:
            out["audio"] = _audio_value(row[audio_column], root, where, source_label)
            path = out["audio"]["path"]
            if out["audio"]["bytes"] is None and not os.path.isfile(path):
                missing.append(path)
                continue
        out["text"] = "" if text_column is None or row[text_column] is None else str(row[text_column])
        if speakers is not None:
            out["speaker"] = speakers[index]
        if "duration" in row and row["duration"] not in (None, ""):
            out["duration"] = _duration_cell(row["duration"], where, source_label)
        for column in extra_columns:
            out[column] = row.get(column)
        kept.append(out)
        kept_locations.append(where)
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
    _note_duplicates(kept, kept_locations, report, source_label)

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


SPLIT_NAMES = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
               "val": "validation", "dev": "validation", "test": "test", "eval": "test"}


def _from_disk(source):
    """A folder written by Dataset/DatasetDict.save_to_disk -> that object; anything else unchanged."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            return datasets.load_from_disk(str(path))
    return source


def _with_split_column(splits: datasets.DatasetDict) -> datasets.Dataset:
    """One dataset whose `split` column says which of the given train/validation/test splits a row is in."""
    unknown = [name for name in splits if name not in SPLIT_NAMES]
    if unknown:
        raise CorpusError(f"DatasetDict split(s) {unknown} are not train, validation or test (or an alias: "
                          f"{sorted(SPLIT_NAMES)}). Rename them, e.g. DatasetDict(train=..., validation=..., test=...).")
    named = [part.add_column("split", [SPLIT_NAMES[name]] * len(part)) for name, part in splits.items()]
    try:
        return datasets.concatenate_datasets(named)
    except ValueError as err:
        raise CorpusError(f"The splits of the DatasetDict have different columns or types ({err}); give them the "
                          "same features, e.g. cast every split's label to one ClassLabel.") from err


def _duration_cell(value, where: str, source_label: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise CorpusError(f"{source_label}: {where} has duration {value!r}, not a number of seconds. Fix the cell, "
                          "or drop the duration column (durations are then read from the audio headers).") from None
    if not seconds > 0:
        raise CorpusError(f"{source_label}: {where} has duration {value!r}; a clip lasts more than 0 seconds.")
    return seconds


def _note_duplicates(kept: list[dict], locations: list[str], report: LoadReport, source_label: str) -> None:
    """Rows identical in every cell (audio, text, label, speaker and any other column) are kept, since the user
    may mean them, but listed: a copied block of rows otherwise counts twice in training and in the scores."""
    first_seen, groups = {}, {}
    for row, where in zip(kept, locations, strict=True):
        audio = row.get("audio")
        cells = {**row, "audio": None if audio is None else
                 (audio["path"], None if audio["bytes"] is None else hashlib.sha1(audio["bytes"]).hexdigest())}
        key = json.dumps(cells, sort_keys=True, default=str)
        if key in first_seen:
            groups.setdefault(first_seen[key], [first_seen[key]]).append(where)
        else:
            first_seen[key] = where
    if groups:
        report.duplicates = list(groups.values())
        report.note("exact duplicate rows (kept)", sum(len(group) - 1 for group in groups.values()))
        logger.warning("%s: %d group(s) of identical rows (every cell the same), kept: %s. Remove the "
                       "copies if they are not meant to count twice.", source_label, len(groups),
                       first_few(list(groups.values()), 3))


def _rows_from_manifest(source, audio_column, audio_root, report: LoadReport):
    """(rows, row locations, audio root, audio column, fingerprint parts) of a manifest file or an audiofolder."""
    path = Path(source).expanduser()
    if path.is_dir():
        manifest = path / "metadata.csv"
        if not manifest.is_file():
            raise FileNotFoundError(
                f"{str(path)!r} is a folder without metadata.csv. An audiofolder corpus needs "
                "metadata.csv with a file_name column (audio paths relative to the folder) plus "
                "text and label columns; or pass the path of a CSV/JSONL manifest, or a folder written by "
                "datasets' save_to_disk."
            )
        if audio_column == "auto":
            audio_column = "file_name"
    elif path.is_file():
        manifest = path
    else:
        raise FileNotFoundError(f"Corpus manifest {str(path)!r} does not exist.")
    rows, locations = _read_manifest(manifest, report)
    if not rows:
        raise CorpusError(f"{manifest}: the manifest has no rows.")
    root = Path(audio_root).expanduser().resolve() if audio_root is not None else manifest.parent.resolve()
    return rows, locations, root, audio_column, [str(manifest.resolve()),
                                                 hashlib.sha256(manifest.read_bytes()).hexdigest()]


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
    """Manifest/dataset audio cell -> {"bytes", "path"}; a relative path is taken relative to `root`.

    A local manifest is trusted like the user's own code: absolute paths, '..' and symlinked folders are all
    fine. The path is resolved (symlinks followed), so one file reached under two names is one file to the
    split checks."""
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return {"bytes": value["bytes"], "path": value.get("path")}
        value = value.get("path")
    if value is None or str(value).strip() == "":
        raise CorpusError(f"{source_label}: {item} has no audio path. Fill in the cell or remove the row.")
    value = os.path.expanduser(os.fspath(value).strip())
    base = os.getcwd() if root is None else os.fspath(root)
    return {"bytes": None, "path": os.path.realpath(os.path.join(base, value))}


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
