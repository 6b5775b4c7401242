"""Speaker-independent folds. Every split is by speaker, so no speaker is ever in two parts of one fold (checked).

Each fold is also checked before anything trains on it: its training part has every class its validation and
test parts have, and no audio (the same path, or the same content under another name) is on two sides.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache

import datasets
import numpy as np

from .common import first_few


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
    where = f"test speakers {sorted(test_speakers)}, validation speakers {sorted(validation_speakers)}"
    for name, indices in parts.items():
        if len(indices) == 0:
            raise ValueError(f"The {name} split of this fold is empty ({where}).")
    check_fold(dataset, parts, where)
    return datasets.DatasetDict({name: dataset.select(indices) for name, indices in parts.items()})


def check_fold(dataset: datasets.Dataset, parts: dict, where: str) -> None:
    """Refuse a fold that cannot give an honest score: a class missing from training, or audio on two sides."""
    _check_classes(dataset, parts, where)
    _check_no_shared_audio(dataset, parts, where)


def _check_classes(dataset, parts, where):
    labels = np.asarray(dataset["label"])
    feature = dataset.features.get("label")
    name_of = feature.int2str if isinstance(feature, datasets.ClassLabel) else str
    trained = set(labels[parts["train"]].tolist())
    for part in ("validation", "test"):
        if part not in parts:
            continue
        absent = {}
        for label in labels[parts[part]].tolist():
            if label not in trained:
                absent[name_of(label)] = absent.get(name_of(label), 0) + 1
        if absent:
            raise ValueError(
                f"The training part of this fold ({where}) has no rows of class(es) {sorted(absent)}, which its "
                f"{part} part has ({absent} rows): the model could never predict them, and the score would count "
                "them as certain errors. Use fewer folds (more speakers per training part), merge or drop the "
                "class (label_mapping), or choose other test speakers."
            )


def _check_no_shared_audio(dataset, parts, where):
    """The same file, or the same bytes under another name, in two parts of a fold is training on test audio."""
    if "audio" not in dataset.column_names:
        return
    audio = dataset["audio"]
    names = dataset["id"] if "id" in dataset.column_names else None
    side = np.empty(len(dataset), dtype=object)
    for part, indices in parts.items():
        side[indices] = part

    def describe(index):
        item = audio[index]
        label = item.get("path") if isinstance(item, dict) and item.get("path") else f"row {index}"
        return f"{label} ({side[index]}{', ' + str(names[index]) if names is not None else ''})"

    def report(groups, how):
        shown = "; ".join(" = ".join(describe(i) for i in group[:3]) for group in groups[:3])
        raise ValueError(
            f"The same audio ({how}) is in two parts of this fold ({where}): {shown}"
            f"{f' ... ({len(groups) - 3} more)' if len(groups) > 3 else ''}. A model would be trained or selected "
            "on audio it is then scored on: remove the copies from the corpus, or give every copy one speaker."
        )

    used = [i for i in range(len(dataset)) if side[i] is not None]
    by_path, by_size = {}, {}
    for index in used:
        path, size = _audio_path_and_size(audio[index])
        if path is not None:
            by_path.setdefault(path, []).append(index)
        by_size.setdefault(size, []).append(index)
    shared = [group for group in by_path.values() if len({side[i] for i in group}) > 1]
    if shared:
        report(shared, "same file")
    # Content only where sizes collide: hashing every file of a large corpus for every fold would be slow.
    by_hash = {}
    for group in by_size.values():
        if len({side[i] for i in group}) > 1:
            for index in group:
                by_hash.setdefault(_audio_digest(audio[index]), []).append(index)
    shared = [group for group in by_hash.values() if len({side[i] for i in group}) > 1]
    if shared:
        report(shared, "same content")


def _audio_path_and_size(item) -> tuple[str | None, int]:
    if isinstance(item, dict) and item.get("bytes") is not None:
        return None, len(item["bytes"])
    if isinstance(item, dict) and item.get("array") is not None:
        return None, len(item["array"])
    path = item.get("path") if isinstance(item, dict) else item
    if path is None:
        return None, -1
    path = os.path.realpath(os.fspath(path))
    try:
        return path, os.path.getsize(path)
    except OSError:
        return path, -1  # unreadable files are reported by the loader and the collator, with their name


def _audio_digest(item) -> str:
    if isinstance(item, dict) and item.get("bytes") is not None:
        return hashlib.blake2b(item["bytes"], digest_size=16).hexdigest()
    if isinstance(item, dict) and item.get("array") is not None:
        return hashlib.blake2b(np.asarray(item["array"], dtype=np.float32).tobytes(), digest_size=16).hexdigest()
    path = os.path.realpath(os.fspath(item.get("path") if isinstance(item, dict) else item))
    try:
        stat = os.stat(path)
    except OSError:
        return f"unreadable:{path}"
    return _file_digest(path, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=65536)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """Keyed by size and mtime too, so an edited file is hashed again; every fold after the first is a cache hit."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    if len(sessions) < 2:
        raise ValueError(f"Leave-one-session-out needs at least 2 sessions (train on the others, test on one); the "
                         f"corpus has {len(sessions)}: {sessions}. Use --cv speakers (leave speakers out) instead.")
    folds = {}
    for position, session in enumerate(sessions):
        if validation_speakers == "auto":
            following = by_session[sessions[(position + 1) % len(sessions)]]
            wanted = "F" if session % 2 else "M"
            chosen = [s for s in following if s.endswith(wanted)] or following[:1]
            validation = chosen[:1]
        else:
            validation = _chosen_validation(validation_speakers, session)
        leaked = set(validation) & set(by_session[session])
        if leaked:
            raise ValueError(f"Validation speakers {sorted(leaked)} belong to test session {session}; "
                             "model selection must not look at the test session.")
        folds[session] = _split_by_speaker(dataset, by_session[session], validation)
    return folds


def _chosen_validation(validation_speakers, fold) -> list:
    """The validation speakers a caller chose for `fold`: None (no validation split), a callable(fold) or a
    mapping {fold: speakers}."""
    if validation_speakers is None:
        return []
    if callable(validation_speakers):
        return list(validation_speakers(fold))
    return list(validation_speakers.get(fold, ()))


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
            else:
                validation = _chosen_validation(validation_speakers, speaker)
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
    needed = 2 + (n_validation_speakers > 0)
    if len(speakers) < needed:
        raise ValueError(
            f"Speaker-independent folds need at least {needed} speakers (training, {'validation, ' * (needed > 2)}"
            f"test); the corpus has {len(speakers)} speaker(s) {first_few(speakers)} in {len(dataset)} row(s). "
            f"Add speakers, or fill the {speaker_column!r} column with the real speaker of each row."
        )
    if n_folds < 2 or n_folds > len(speakers):
        raise ValueError(f"n_folds (--num_speaker_folds) must be between 2 and the number of speakers "
                         f"({len(speakers)}), got {n_folds}.")
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
