"""Speaker-independent folds. Every split is by speaker, so no speaker is ever in two parts of one fold (checked)."""

from __future__ import annotations

import datasets
import numpy as np


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
