"""Corpus loading and folds on an IEMOCAP-format tree written here, with every quirk of the real release.

Expected counts are written out by hand from TREE below (not computed by the code under test).
"""

import csv
import json
import logging
import time
import zlib
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf

from modeling_mer.audio_io_mer import load_audio
from modeling_mer.data import (
    CorpusError,
    leave_one_session_out,
    leave_one_speaker_out,
    leave_speakers_out,
    load_corpus,
    load_iemocap,
    session5_split,
)
from modeling_mer.data.folds import _split_by_speaker

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

# session -> dialog -> emotion codes of its utterances in order; utterance i is spoken by F if i is even.
TREE = {
    1: {"Ses01F_impro01": ["neu", "hap", "exc", "sad", "ang", "fru", "xxx"], "Ses01M_script01_1": ["neu", "ang", "sad"]},
    2: {"Ses02F_impro02": ["neu", "neu", "hap", "sad", "sur"], "Ses02M_script02_2": ["exc", "exc", "ang", "oth"]},
    3: {"Ses03M_impro05a": ["neu", "sad", "dis"], "Ses03M_impro05b": ["hap", "ang", "ang"],
        "Ses03F_script03_1": ["fea", "neu"]},
    4: {"Ses04F_impro04": ["neu", "exc", "sad", "ang", "xxx", "xxx"]},
    5: {"Ses05M_impro03": ["hap", "hap", "exc", "neu", "sad", "ang", "fru"]},
}
# 4-class counts per session, by hand from TREE: (neutral, happy = hap+exc, sad, angry).
EXPECTED_4CLASS = {1: (2, 2, 2, 2), 2: (2, 3, 1, 1), 3: (2, 1, 1, 2), 4: (1, 1, 1, 1), 5: (1, 3, 1, 1)}
EXPECTED_NO_EXC_TOTAL = 31 - 5  # five exc utterances
EXPECTED_ALL_TOTAL = 40

CP1252_TEXT = "It\u2019s fine."  # byte 0x92 is a curly apostrophe in cp1252 and invalid UTF-8
NO_TRANSCRIPT_ID = "Ses04F_impro04_M003"


def _utterance_id(dialog, index):
    return f"{dialog}_{'F' if index % 2 == 0 else 'M'}{index:03d}"


def _duration(index):
    return 0.05 + 0.01 * index  # seconds; distinct per position so the duration column is checkable


def _write_wav(path, seconds, sampling_rate=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(round(seconds * sampling_rate))) / sampling_rate
    # A tone of its own per file: two utterances must never be the same audio (the fold checks refuse that).
    frequency = 200 + zlib.crc32(path.name.encode()) % 400
    sf.write(path, 0.1 * np.sin(2 * np.pi * frequency * t), sampling_rate, subtype="PCM_16")


def write_iemocap_tree(root: Path) -> Path:
    root = root / "IEMOCAP_full_release"
    for session, dialogs in TREE.items():
        base = root / f"Session{session}"
        labels_dir, transcripts_dir = base / "dialog" / "EmoEvaluation", base / "dialog" / "transcriptions"
        labels_dir.mkdir(parents=True)
        transcripts_dir.mkdir(parents=True)
        # The real release has per-evaluator subfolders here; they must not be read as label files.
        (labels_dir / "Categorical").mkdir()
        (labels_dir / "Categorical" / "junk_cat.txt").write_text("not a label file\n")
        for dialog, codes in dialogs.items():
            label_lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            transcript_lines = ["M: Yeah."]  # bare line without id or time
            for index, code in enumerate(codes):
                utt = _utterance_id(dialog, index)
                start, end = 1.0 + 3 * index, 2.5 + 3 * index
                label_lines += [
                    f"[{start:.4f} - {end:.4f}]\t{utt}\t{code}\t[2.5000, {3 + index * 0.5:.4f}, 2.0000]",
                    "C-E2:\tNeutral;\t()",
                    "C-E3:\tNeutral;\t()",
                    "A-E3:\tval 3; act 2; dom  2;\t()",
                    "",
                ]
                if utt != NO_TRANSCRIPT_ID:
                    text = f"utterance {index} of {dialog}"
                    if index == 1:
                        text = f"[LAUGHTER] {text} [BREATHING]"
                    transcript_lines.append(f"{utt} [{start:08.4f}-{end:08.4f}]: {text}")
                _write_wav(base / "sentences" / "wav" / dialog / f"{utt}.wav", _duration(index))
            # An unlabelled XX turn, and (in one dialog) a line with non-UTF-8 bytes.
            transcript_lines.append(f"{dialog}_MXX0 [099.0000-100.0000]: [overlap]")
            body = "\n".join(transcript_lines) + "\n"
            if dialog == "Ses01F_impro01":
                body += f"{_utterance_id(dialog, 6)}_extra [1.0-2.0]: junk\n"
                body = body.replace("utterance 0 of Ses01F_impro01", CP1252_TEXT)
            (transcripts_dir / f"{dialog}.txt").write_bytes(body.encode("cp1252"))
            (labels_dir / f"{dialog}.txt").write_text("\n".join(label_lines) + "\n")
            # macOS resource forks: garbage that must be skipped, not parsed or decoded.
            (labels_dir / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07 garbage")
            (base / "sentences" / "wav" / dialog / f"._{_utterance_id(dialog, 0)}.wav").write_bytes(b"\x00\x05")
    return root


@pytest.fixture(scope="module")
def iemocap_root(tmp_path_factory):
    return write_iemocap_tree(tmp_path_factory.mktemp("iemocap"))


@pytest.fixture(scope="module")
def iemocap(iemocap_root, tmp_path_factory):
    return load_iemocap(iemocap_root, cache_dir=tmp_path_factory.mktemp("cache"), return_report=True)


def _counts_by_session(dataset):
    names = dataset.features["label"].names
    table = Counter(zip(dataset["session"], (names[i] for i in dataset["label"]), strict=True))
    return {s: tuple(table[(s, c)] for c in ("neutral", "happy", "sad", "angry")) for s in range(1, 6)}


# ---------------------------------------------------------------------------------------------- IEMOCAP


def test_iemocap_4class_counts_per_session_and_class(iemocap):
    dataset, report = iemocap
    assert dataset.features["label"].names == ["neutral", "happy", "sad", "angry"]
    assert _counts_by_session(dataset) == EXPECTED_4CLASS
    assert len(dataset) == sum(map(sum, EXPECTED_4CLASS.values())) == 31
    # Every dropped utterance is accounted for by code.
    assert sum(report.dropped.values()) == EXPECTED_ALL_TOTAL - 31
    assert report.dropped["code 'xxx' not in the protocol"] == 3
    assert report.dropped["code 'fru' not in the protocol"] == 2


def test_iemocap_other_protocols(iemocap_root, tmp_path):
    no_exc = load_iemocap(iemocap_root, protocol="4class_no_exc", cache_dir=tmp_path)
    assert len(no_exc) == EXPECTED_NO_EXC_TOTAL
    assert "exc" not in set(no_exc["emotion_code"])
    everything = load_iemocap(iemocap_root, protocol="all", cache_dir=tmp_path)
    assert len(everything) == EXPECTED_ALL_TOTAL
    names = everything.features["label"].names
    assert Counter(names[i] for i in everything["label"])["no_agreement"] == 3
    six = load_iemocap(iemocap_root, protocol="6class", cache_dir=tmp_path)
    six_names = six.features["label"].names
    assert Counter(six_names[i] for i in six["label"]) == {
        "neutral": 8, "happy": 5, "excited": 5, "sad": 6, "angry": 7, "frustrated": 2}
    with pytest.raises(ValueError, match="4class_no_exc"):
        load_iemocap(iemocap_root, protocol="7class", cache_dir=tmp_path)


def test_iemocap_columns_and_quirks(iemocap):
    dataset, report = iemocap
    assert isinstance(dataset.features["audio"], datasets.Audio)
    assert dataset.features["audio"].decode is False
    rows = {row["id"]: row for row in dataset}
    row = rows["Ses01M_script01_1_M001"]  # 3-part script dialog id
    assert row["dialog"] == "Ses01M_script01_1"
    assert row["method"] == "script"
    assert (row["speaker"], row["gender"], row["session"]) == ("Ses01M", "male", 1)
    assert row["label"] == 3  # ang -> angry
    assert row["text"] == "[LAUGHTER] utterance 1 of Ses01M_script01_1 [BREATHING]"  # tags kept by default
    assert row["start"] == pytest.approx(4.0) and row["end"] == pytest.approx(5.5)
    assert row["arousal"] == pytest.approx(3.5)
    assert row["duration"] == pytest.approx(_duration(1), abs=1e-6)
    assert Path(row["audio"]["path"]).name == "Ses01M_script01_1_M001.wav"
    # a/b dialog suffix: dialog from rsplit, speaker from the utterance's own F/M letter.
    b_row = rows["Ses03M_impro05b_F002"]
    assert (b_row["dialog"], b_row["speaker"], b_row["method"]) == ("Ses03M_impro05b", "Ses03F", "impro")
    # Non-UTF-8 transcript bytes decoded (cp1252), not crashed on and not dropped.
    assert rows["Ses01F_impro01_F000"]["text"] == "It\u2019s fine."
    assert rows[NO_TRANSCRIPT_ID]["text"] == ""
    assert report.notes["labelled utterances without a transcript line (text left empty)"] == 1
    assert report.notes["files with non-UTF-8 bytes (read as cp1252)"] == 1
    assert report.notes["macOS '._*' files skipped"] == 2 * sum(len(d) for d in TREE.values())
    assert report.notes["transcript lines without id/time (e.g. bare 'M: ...')"] == sum(len(d) for d in TREE.values())
    # Every dialog has one unlabelled XX turn; Ses01F_impro01 also a stray id.
    assert report.notes["transcribed turns without a label (e.g. *_MXX0 / *_FXX0)"] == 9 + 1
    # Audio decodes to the right number of samples.
    assert len(load_audio(row["audio"])) == round(_duration(1) * 16000)


def test_iemocap_strip_tags(tmp_path):
    root = write_iemocap_tree(tmp_path / "tree")
    transcript = root / "Session2" / "dialog" / "transcriptions" / "Ses02F_impro02.txt"
    body = transcript.read_bytes().replace(b"utterance 2 of Ses02F_impro02", b"[LAUGHTER]")
    transcript.write_bytes(body)
    dataset, report = load_iemocap(root, keep_tags=False, cache_dir=tmp_path / "cache", return_report=True)
    texts = dict(zip(dataset["id"], dataset["text"], strict=True))
    assert texts["Ses01M_script01_1_M001"] == "utterance 1 of Ses01M_script01_1"
    # A transcript that is only a tag keeps it rather than becoming empty.
    assert texts["Ses02F_impro02_F002"] == "[LAUGHTER]"
    assert report.notes["transcripts made only of tags (tags kept)"] == 1
    assert sum("[" in t for t in texts.values()) == 1


def test_iemocap_second_load_is_a_cache_hit(iemocap_root, tmp_path):
    first = load_iemocap(iemocap_root, cache_dir=tmp_path)
    start = time.perf_counter()
    second = load_iemocap(iemocap_root, cache_dir=tmp_path)
    elapsed = time.perf_counter() - start
    assert [f["filename"] for f in second.cache_files] == [f["filename"] for f in first.cache_files]
    assert elapsed < 1.0
    assert second["id"] == first["id"]


def test_iemocap_cache_invalidated_when_a_wav_changes(tmp_path):
    root = write_iemocap_tree(tmp_path / "tree")
    first = load_iemocap(root, cache_dir=tmp_path / "cache")
    wav = root / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_F000.wav"
    _write_wav(wav, 0.5)
    second = load_iemocap(root, cache_dir=tmp_path / "cache")
    assert second.cache_files[0]["filename"] != first.cache_files[0]["filename"]
    durations = dict(zip(second["id"], second["duration"], strict=True))
    assert durations["Ses01F_impro01_F000"] == pytest.approx(0.5)


def test_iemocap_accepts_the_parent_folder(iemocap_root, tmp_path):
    dataset = load_iemocap(iemocap_root.parent, cache_dir=tmp_path)
    assert len(dataset) == 31


# ------------------------------------------------------------------------------------ IEMOCAP bad input


def test_missing_root_shows_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="(?s)does not exist.*Session1/ ... Session5/.*EmoEvaluation"):
        load_iemocap(tmp_path / "nowhere", cache_dir=tmp_path)


def test_missing_session_folder_is_named(tmp_path):
    root = write_iemocap_tree(tmp_path)
    for path in sorted((root / "Session3").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (root / "Session3").rmdir()
    with pytest.raises(FileNotFoundError, match="(?s)Session3.*Expected layout"):
        load_iemocap(root, cache_dir=tmp_path / "cache")


def test_missing_wav_errors_or_is_skipped_with_counts(tmp_path, caplog):
    root = write_iemocap_tree(tmp_path)
    gone = ["Ses02F_impro02_F000", "Ses05M_impro03_M001"]
    for utt in gone:
        dialog = utt.rsplit("_", 1)[0]
        (root / f"Session{utt[4]}" / "sentences" / "wav" / dialog / f"{utt}.wav").unlink()
    with pytest.raises(FileNotFoundError, match="2 labelled utterance.*Ses02F_impro02_F000.*on_missing='skip'"):
        load_iemocap(root, cache_dir=tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="modeling_mer.data"):
        dataset, report = load_iemocap(root, on_missing="skip", cache_dir=tmp_path / "cache", return_report=True)
    assert len(dataset) == 31 - 2
    assert not set(gone) & set(dataset["id"])
    assert report.dropped["WAV file missing"] == 2
    assert "skipped 2" in caplog.text


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00junk that is not a wav file"], ids=["empty", "corrupt"])
def test_unreadable_wav_is_named(tmp_path, content):
    root = write_iemocap_tree(tmp_path)
    bad = root / "Session4" / "sentences" / "wav" / "Ses04F_impro04" / "Ses04F_impro04_F002.wav"
    bad.write_bytes(content)
    with pytest.raises(CorpusError, match="1 audio file.*Ses04F_impro04_F002.wav"):
        load_iemocap(root, cache_dir=tmp_path / "cache")


def test_utterance_id_escaping_the_root_is_refused(tmp_path):
    root = write_iemocap_tree(tmp_path)
    label_file = root / "Session2" / "dialog" / "EmoEvaluation" / "Ses02F_impro02.txt"
    text = label_file.read_text().replace("Ses02F_impro02_F000", "Ses02F_impro02_../../../../etc/passwd")
    label_file.write_text(text)
    with pytest.raises(CorpusError, match="Ses02F_impro02.txt.*not an IEMOCAP id"):
        load_iemocap(root, cache_dir=tmp_path / "cache")


def test_malformed_label_line_is_located(tmp_path):
    root = write_iemocap_tree(tmp_path)
    label_file = root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01M_script01_1.txt"
    label_file.write_text(label_file.read_text() + "[1.0 - oops]\tbroken\n")
    with pytest.raises(CorpusError, match=r"Ses01M_script01_1.txt:\d+: cannot parse"):
        load_iemocap(root, cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------------------------------------- folds


def _speakers(split):
    return set(split["speaker"])


def test_leave_one_session_out_is_speaker_and_session_independent(iemocap):
    dataset, _ = iemocap
    folds = leave_one_session_out(dataset)
    assert sorted(folds) == [1, 2, 3, 4, 5]
    for session, fold in folds.items():
        assert set(fold["test"]["session"]) == {session}
        assert _speakers(fold["test"]) == {f"Ses{session:02d}F", f"Ses{session:02d}M"}
        assert session not in set(fold["validation"]["session"])
        assert len(_speakers(fold["validation"])) == 1
        assert not _speakers(fold["train"]) & _speakers(fold["test"])
        assert not _speakers(fold["train"]) & _speakers(fold["validation"])
        assert len(fold["train"]) + len(fold["validation"]) + len(fold["test"]) == len(dataset)
        assert len(fold["test"]) == sum(EXPECTED_4CLASS[session])
    # Each fold validates on a different speaker.
    assert len({next(iter(_speakers(f["validation"]))) for f in folds.values()}) == 5


def test_leave_one_session_out_options(iemocap):
    dataset, _ = iemocap
    plain = leave_one_session_out(dataset, validation_speakers=None)
    assert set(plain[2]) == {"train", "test"}
    with pytest.raises(ValueError, match="test session"):
        leave_one_session_out(dataset, validation_speakers={1: ["Ses01F"]})
    split = session5_split(dataset)
    assert set(split["test"]["session"]) == {5}
    assert set(split["train"]["session"]) | set(split["validation"]["session"]) == {1, 2, 3, 4}


def test_leave_one_speaker_out(iemocap):
    dataset, _ = iemocap
    folds = leave_one_speaker_out(dataset)
    assert len(folds) == 10
    for speaker, fold in folds.items():
        assert _speakers(fold["test"]) == {speaker}
        other = speaker[:-1] + ("M" if speaker.endswith("F") else "F")
        assert _speakers(fold["validation"]) == {other}
        assert not {speaker, other} & _speakers(fold["train"])
        assert len(fold["train"]) + len(fold["validation"]) + len(fold["test"]) == len(dataset)


# ------------------------------------------------------------------------------------- generic corpora


def _write_manifest(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def small_corpus(tmp_path):
    """Six clips: stereo 44.1 kHz and mono 16 kHz, three labels, three speakers."""
    rows = []
    (tmp_path / "clips").mkdir()
    for index in range(6):
        rate, channels = (44100, 2) if index % 2 else (16000, 1)
        seconds = 0.2 + 0.1 * index
        t = np.arange(int(seconds * rate)) / rate
        wave = 0.2 * np.sin(2 * np.pi * 440 * t)
        data = np.stack([wave, wave], axis=1) if channels == 2 else wave
        sf.write(tmp_path / "clips" / f"c{index}.wav", data, rate)
        rows.append({"path": f"clips/c{index}.wav", "text": f"sentence {index}",
                     "label": ["calm", "joy", "rage"][index % 3], "speaker": f"s{index % 3}", "take": index})
    _write_manifest(tmp_path / "manifest.csv", rows)
    return tmp_path


def test_manifest_corpus_with_mapping_and_conversion(small_corpus):
    dataset, report = load_corpus(
        small_corpus / "manifest.csv", label_names=["neutral", "happy", "sad", "angry"],
        label_mapping={"calm": "neutral", "joy": "happy", "rage": "angry"},
        cache_dir=small_corpus / "cache", return_report=True)
    assert len(dataset) == 6 and report.kept == 6
    assert dataset.features["label"].names == ["neutral", "happy", "sad", "angry"]
    assert dataset["label"] == [0, 1, 3, 0, 1, 3]
    assert dataset["speaker"] == ["s0", "s1", "s2", "s0", "s1", "s2"]
    assert dataset["take"] == [str(i) for i in range(6)]  # extra columns kept
    for index, row in enumerate(dataset):
        expected_seconds = 0.2 + 0.1 * index
        assert row["duration"] == pytest.approx(expected_seconds, abs=1e-4)
        waveform = load_audio(row["audio"])
        # Stereo 44.1 kHz came back mono 16 kHz with the same duration.
        assert waveform.ndim == 1
        assert len(waveform) == pytest.approx(expected_seconds * 16000, abs=2)


def test_manifest_labels_from_data_and_dropping(small_corpus):
    dataset, report = load_corpus(small_corpus / "manifest.csv", label_mapping={"rage": None},
                                  cache_dir=small_corpus / "cache", return_report=True)
    assert dataset.features["label"].names == ["calm", "joy"]
    assert len(dataset) == 4
    assert report.dropped["label 'rage' mapped to None"] == 2


def test_manifest_bad_input(small_corpus, tmp_path):
    cache = small_corpus / "cache"
    with pytest.raises(CorpusError, match=r"'rage': 2.*label_mapping"):
        load_corpus(small_corpus / "manifest.csv", label_names=["calm", "joy"], cache_dir=cache)
    with pytest.raises(CorpusError, match="no label column 'emotion'.*label_column"):
        load_corpus(small_corpus / "manifest.csv", label_column="emotion", cache_dir=cache)
    rows = list(csv.DictReader(open(small_corpus / "manifest.csv")))
    rows[2]["path"] = "clips/gone.wav"
    _write_manifest(small_corpus / "missing.csv", rows)
    with pytest.raises(FileNotFoundError, match="1 audio file.*gone.wav"):
        load_corpus(small_corpus / "missing.csv", cache_dir=cache)
    skipped, report = load_corpus(small_corpus / "missing.csv", on_missing="skip", cache_dir=cache, return_report=True)
    assert len(skipped) == 5 and report.dropped["audio file missing"] == 1
    (small_corpus / "clips" / "c3.wav").write_bytes(b"")
    with pytest.raises(CorpusError, match="c3.wav"):
        load_corpus(small_corpus / "manifest.csv", cache_dir=cache)


def test_audiofolder_jsonl_and_dataset_sources(small_corpus):
    rows = list(csv.DictReader(open(small_corpus / "manifest.csv")))
    folder = small_corpus / "clips"
    _write_manifest(folder / "metadata.csv", [{"file_name": Path(r["path"]).name, "text": r["text"],
                                                "label": r["label"]} for r in rows])
    from_folder = load_corpus(folder, cache_dir=small_corpus / "cache")
    assert len(from_folder) == 6 and "speaker" not in from_folder.column_names
    with open(small_corpus / "manifest.jsonl", "w") as handle:
        for r in rows:
            handle.write(json.dumps({"wav": r["path"], "sentence": r["text"], "emotion": r["label"],
                                     "actor": r["speaker"], "take": int(r["take"])}) + "\n")
    from_jsonl = load_corpus(small_corpus / "manifest.jsonl", text_column="sentence", label_column="emotion",
                             speaker_column="actor", cache_dir=small_corpus / "cache")
    assert from_jsonl["take"] == list(range(6))
    assert from_jsonl["text"] == from_folder["text"]
    source = datasets.Dataset.from_dict({
        "audio": [str(folder / f"c{i}.wav") for i in range(6)],
        "text": [r["text"] for r in rows],
        "label": [["calm", "joy", "rage"].index(r["label"]) for r in rows],
        "speaker": [r["speaker"] for r in rows],
    }).cast_column("label", datasets.ClassLabel(names=["calm", "joy", "rage"]))
    from_dataset = load_corpus(source, label_mapping={"calm": "neutral", "joy": "happy", "rage": "angry"},
                               cache_dir=small_corpus / "cache")
    assert from_dataset.features["label"].names == ["angry", "happy", "neutral"]
    names = from_dataset.features["label"].names
    assert [names[i] for i in from_dataset["label"]] == ["neutral", "happy", "angry"] * 2
    assert from_dataset["duration"] == pytest.approx(from_folder["duration"])


def test_dataset_source_with_embedded_bytes(small_corpus):
    clips = sorted((small_corpus / "clips").glob("c*.wav"))
    source = datasets.Dataset.from_dict({
        "audio": [{"bytes": p.read_bytes(), "path": p.name} for p in clips],
        "sentence": [f"s{i}" for i in range(len(clips))],
        "label": ["a", "b"] * 3,
    }).cast_column("audio", datasets.Audio(decode=False))
    dataset = load_corpus(source, text_column="sentence", cache_dir=small_corpus / "cache")
    assert dataset[1]["audio"]["bytes"] == clips[1].read_bytes()
    assert dataset["duration"] == pytest.approx([0.2 + 0.1 * i for i in range(6)], abs=1e-4)
    assert len(load_audio(dataset[1]["audio"])) == pytest.approx(0.3 * 16000, abs=2)


def _speaker_corpus(root, speakers=4, labels=("calm", "joy", "rage"), seconds=0.2):
    """Every speaker says every label once, each clip its own tone: folds over it are honest by construction."""
    (root / "spk").mkdir(parents=True, exist_ok=True)
    rows = []
    for speaker in range(speakers):
        for position, label in enumerate(labels):
            name = f"spk/{speaker}_{label}.wav"
            t = np.arange(int(seconds * 16000)) / 16000
            sf.write(root / name, 0.2 * np.sin(2 * np.pi * (300 + 50 * speaker + 7 * position) * t), 16000)
            rows.append({"path": name, "text": f"{label} words", "label": label, "speaker": f"s{speaker}"})
    _write_manifest(root / "speakers.csv", rows)
    return root / "speakers.csv"


def test_leave_speakers_out_generic(tmp_path):
    dataset = load_corpus(_speaker_corpus(tmp_path), cache_dir=tmp_path / "cache")
    folds = leave_speakers_out(dataset, n_folds=4, n_validation_speakers=1)
    tested = set()
    for fold in folds.values():
        parts = [_speakers(fold[name]) for name in ("train", "validation", "test")]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        tested |= parts[2]
    assert tested == {"s0", "s1", "s2", "s3"}  # every speaker is tested exactly once over the folds


def test_a_class_only_the_test_speakers_have_is_refused(tmp_path):
    manifest = _speaker_corpus(tmp_path)
    rows = list(csv.DictReader(open(manifest)))
    rows = [row for row in rows if row["label"] != "rage" or row["speaker"] == "s0"]  # only s0 is ever angry
    _write_manifest(manifest, rows)
    dataset = load_corpus(manifest, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match=r"training part of this fold \(test speakers \['s0'\].*has no rows of "
                                         r"class\(es\) \['rage'\], which its test part has \(\{'rage': 1\}.*fewer folds"):
        experiment_fold(dataset, test=["s0"], validation=["s1"])


def experiment_fold(dataset, test, validation=()):
    return _split_by_speaker(dataset, test, validation)


@pytest.mark.parametrize("how", ["same path", "copied file", "symlink"])
def test_the_same_audio_on_two_sides_of_a_split_is_refused(tmp_path, how):
    manifest = _speaker_corpus(tmp_path)
    rows = list(csv.DictReader(open(manifest)))
    test_clip = next(row["path"] for row in rows if row["speaker"] == "s3" and row["label"] == "joy")
    if how == "copied file":
        (tmp_path / "spk" / "copy.wav").write_bytes((tmp_path / test_clip).read_bytes())
        test_clip = "spk/copy.wav"
    elif how == "symlink":
        (tmp_path / "spk" / "link.wav").symlink_to(tmp_path / test_clip)
        test_clip = "spk/link.wav"
    rows.append({"path": test_clip, "text": "a training copy", "label": "joy", "speaker": "s0"})
    _write_manifest(manifest, rows)
    dataset = load_corpus(manifest, cache_dir=tmp_path / "cache")
    kind = "same content" if how == "copied file" else "same file"
    with pytest.raises(ValueError, match=rf"The same audio \({kind}\) is in two parts of this fold.*3_joy.wav "
                                         r"\((test|train)\).*remove the copies"):
        experiment_fold(dataset, test=["s3"], validation=["s2"])
    experiment_fold(dataset, test=["s1"], validation=["s2"])  # both copies on the training side: fine


def test_one_speaker_or_one_session_is_refused_with_the_count(tmp_path):
    manifest = _speaker_corpus(tmp_path, speakers=1)
    dataset = load_corpus(manifest, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match=r"need at least 3 speakers \(training, validation, test\); the corpus has "
                                         r"1 speaker\(s\) 's0' in 3 row\(s\)"):
        leave_speakers_out(dataset)
    with pytest.raises(ValueError, match=r"need at least 2 speakers.*has 1 speaker"):
        leave_speakers_out(dataset, n_validation_speakers=0)
    one_session = dataset.add_column("session", [1] * len(dataset))
    with pytest.raises(ValueError, match=r"at least 2 sessions.*the corpus has 1: \[1\].*--cv speakers"):
        leave_one_session_out(one_session)


def _csv_text(rows, delimiter=","):
    header = list(rows[0])
    return "\n".join(delimiter.join(str(r.get(c, "")) for c in header) for r in [{c: c for c in header}, *rows]) + "\n"


def test_label_spelling_variants_are_merged_and_reported(small_corpus):
    rows = list(csv.DictReader(open(small_corpus / "manifest.csv")))
    for row, label in zip(rows, ["rage", "Rage", "rage ", " calm", "calm", "RAGE"], strict=True):
        row["label"] = label
    _write_manifest(small_corpus / "variants.csv", rows)
    dataset, report = load_corpus(small_corpus / "variants.csv", cache_dir=small_corpus / "cache", return_report=True)
    assert dataset.features["label"].names == ["calm", "rage"]  # not 'Rage', 'RAGE', 'rage ' or ' calm'
    assert Counter(dataset.features["label"].int2str(dataset["label"])) == {"rage": 4, "calm": 2}
    assert report.notes == {"label 'Rage' merged into 'rage' (same label, other case)": 1,
                            "label 'RAGE' merged into 'rage' (same label, other case)": 1}
    # The spelling the caller names wins over the most frequent one.
    named = load_corpus(small_corpus / "variants.csv", label_names=["RAGE", "calm"], cache_dir=small_corpus / "cache")
    assert named.features["label"].names == ["RAGE", "calm"] and Counter(named["label"]) == {0: 4, 1: 2}


def test_empty_label_or_speaker_cells_are_errors_naming_the_rows(small_corpus):
    rows = list(csv.DictReader(open(small_corpus / "manifest.csv")))
    rows[1]["label"], rows[4]["label"] = "", "  "
    _write_manifest(small_corpus / "empty.csv", rows)
    with pytest.raises(CorpusError, match=r"2 row\(s\) have an empty label cell \('label'\): 'line 3', 'line 6'.*"
                                          r"Fill them in"):
        load_corpus(small_corpus / "empty.csv", cache_dir=small_corpus / "cache")
    rows = list(csv.DictReader(open(small_corpus / "manifest.csv")))
    rows[2]["speaker"] = ""
    _write_manifest(small_corpus / "nospeaker.csv", rows)
    with pytest.raises(CorpusError, match=r"1 row\(s\) have an empty speaker cell \('speaker'\): 'line 4'"):
        load_corpus(small_corpus / "nospeaker.csv", cache_dir=small_corpus / "cache")


def test_short_and_long_csv_rows_are_errors_naming_the_lines(small_corpus):
    lines = (small_corpus / "manifest.csv").read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 2)[0]  # drops the speaker and take cells
    lines[4] = lines[4] + ",surplus"
    (small_corpus / "ragged.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(CorpusError, match=r"ragged.csv: 2 row\(s\) do not have the header's 5 cells: 'line 3', "
                                          r"'line 5'.*quote the cell"):
        load_corpus(small_corpus / "ragged.csv", cache_dir=small_corpus / "cache")


def test_float_labels_are_refused_with_the_rows(small_corpus):
    with open(small_corpus / "ratings.jsonl", "w") as handle:
        for index in range(6):
            handle.write(json.dumps({"path": f"clips/c{index}.wav", "text": "x", "label": 0.5 * index,
                                     "speaker": f"s{index % 3}"}) + "\n")
    with pytest.raises(CorpusError, match=r"label column 'label' holds numbers, not classes, e.g. 'line 1 \(0.0\)'"
                                          r".*integer ids"):
        load_corpus(small_corpus / "ratings.jsonl", cache_dir=small_corpus / "cache")


def test_a_byte_order_mark_does_not_hide_the_first_column(small_corpus):
    text = (small_corpus / "manifest.csv").read_text()
    (small_corpus / "excel.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    dataset = load_corpus(small_corpus / "excel.csv", cache_dir=small_corpus / "cache")
    assert len(dataset) == 6 and "audio" in dataset.column_names  # the first column is 'path', found


def test_exact_duplicate_rows_are_kept_and_listed(small_corpus):
    rows = list(csv.DictReader(open(small_corpus / "manifest.csv")))
    rows.append(dict(rows[1]))
    rows.append(dict(rows[1]))
    rows.append({**rows[2], "text": "another transcript"})  # same audio, other text: not an exact duplicate
    _write_manifest(small_corpus / "dupes.csv", rows)
    dataset, report = load_corpus(small_corpus / "dupes.csv", cache_dir=small_corpus / "cache", return_report=True)
    assert len(dataset) == 9
    assert report.duplicates == [["line 3", "line 8", "line 9"]]
    assert report.notes["exact duplicate rows (kept)"] == 2
    assert "exact duplicate rows (kept): 2" in report.summary()


def test_manifest_paths_relative_absolute_dotdot_and_symlinked(small_corpus, tmp_path_factory):
    """A local manifest is trusted: every way of pointing at a file works, in CSV, TSV and JSONL alike."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / "far.wav").write_bytes((small_corpus / "clips" / "c4.wav").read_bytes())
    (small_corpus / "linked").symlink_to(small_corpus / "clips", target_is_directory=True)
    rows = list(csv.DictReader(open(small_corpus / "manifest.csv")))
    rows[0]["path"] = str(small_corpus / "clips" / "c0.wav")  # absolute
    rows[1]["path"] = "../" + small_corpus.name + "/clips/c1.wav"  # climbs out and back in
    rows[2]["path"] = "linked/c2.wav"  # through a symlinked folder
    rows[4]["path"] = str(Path("..") / elsewhere.relative_to(small_corpus.parent) / "far.wav")  # outside the root
    _write_manifest(small_corpus / "paths.csv", rows)
    (small_corpus / "paths.tsv").write_text(_csv_text(rows, "\t"))
    with open(small_corpus / "paths.jsonl", "w") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    reference = load_corpus(small_corpus / "manifest.csv", cache_dir=small_corpus / "cache")
    for name in ("paths.csv", "paths.tsv", "paths.jsonl"):
        dataset = load_corpus(small_corpus / name, cache_dir=small_corpus / "cache")
        assert dataset["duration"] == pytest.approx(reference["duration"]), name
        assert dataset[2]["audio"]["path"] == str((small_corpus / "clips" / "c2.wav").resolve())  # symlink followed
        assert dataset[4]["audio"]["path"] == str((elsewhere / "far.wav").resolve())
        for row, expected in zip(dataset, reference, strict=True):
            np.testing.assert_array_equal(load_audio(row["audio"]), load_audio(expected["audio"]))


def test_nemo_manifest(small_corpus):
    with open(small_corpus / "nemo.jsonl", "w") as handle:
        for index in range(6):
            handle.write(json.dumps({"audio_filepath": str(small_corpus / "clips" / f"c{index}.wav"),
                                     "text": f"sentence {index}", "duration": 0.2 + 0.1 * index,
                                     "label": ["calm", "joy", "rage"][index % 3], "speaker": f"s{index % 3}"}) + "\n")
    dataset = load_corpus(small_corpus / "nemo.jsonl", cache_dir=small_corpus / "cache")
    assert dataset["text"] == [f"sentence {i}" for i in range(6)]
    assert dataset["duration"] == pytest.approx([0.2 + 0.1 * i for i in range(6)])
    assert len(load_audio(dataset[3]["audio"])) == pytest.approx(0.5 * 16000, abs=2)


def test_saved_dataset_dict_keeps_its_splits(small_corpus, tmp_path):
    clips = sorted((small_corpus / "clips").glob("c*.wav"))
    parts = {}
    for split, indices in (("train", [0, 1, 2, 3]), ("valid", [4]), ("test", [5])):
        parts[split] = datasets.Dataset.from_dict({
            "audio": [str(clips[i]) for i in indices], "text": [f"t{i}" for i in indices],
            "label": [i % 2 for i in indices], "speaker": [f"s{i}" for i in indices],
        }).cast_column("label", datasets.ClassLabel(names=["calm", "joy"]))
    datasets.DatasetDict(parts).save_to_disk(str(tmp_path / "saved"))
    dataset = load_corpus(tmp_path / "saved", cache_dir=small_corpus / "cache")
    assert dataset["split"] == ["train"] * 4 + ["validation", "test"]
    assert dataset["text"] == [f"t{i}" for i in range(6)]
    assert dataset["duration"] == pytest.approx([0.2 + 0.1 * i for i in range(6)], abs=1e-4)


# ------------------------------------------------------------------------------ real data in ../shared


def test_ravdess(tmp_path):
    manifest = SHARED / "data" / "ravdess" / "manifest.csv"
    if not manifest.is_file():
        pytest.skip(f"{manifest} is absent")
    raw = list(csv.DictReader(open(manifest)))
    dataset = load_corpus(manifest, cache_dir=tmp_path)
    assert len(dataset) == len(raw) == 1440
    assert len(dataset.features["label"].names) == 8
    assert len(set(dataset["speaker"])) == 24
    assert load_audio(dataset[0]["audio"]).shape[0] == pytest.approx(float(raw[0]["duration"]) * 16000, abs=16)  # manifest rounds to 1 ms
    folds = leave_speakers_out(dataset, n_folds=6, n_validation_speakers=2)
    assert sum(len(f["test"]) for f in folds.values()) == 1440
    for fold in folds.values():
        assert len(_speakers(fold["test"])) == 4
        assert not _speakers(fold["train"]) & (_speakers(fold["test"]) | _speakers(fold["validation"]))
    # RAVDESS onto IEMOCAP's 4 classes: calm, fearful, disgust, surprised dropped and counted.
    onto = {"neutral": "neutral", "happy": "happy", "sad": "sad", "angry": "angry",
            "calm": None, "fearful": None, "disgust": None, "surprised": None}
    mapped, report = load_corpus(manifest, label_names=["neutral", "happy", "sad", "angry"], label_mapping=onto,
                                 cache_dir=tmp_path, return_report=True)
    expected = Counter(r["label"] for r in raw if onto[r["label"]])
    assert len(mapped) == sum(expected.values())
    assert sum(report.dropped.values()) == 1440 - len(mapped)


def test_meld_text_only(tmp_path):
    path = SHARED / "data" / "meld" / "train_sent_emo.csv"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        raw = list(csv.DictReader(handle))
    dataset = load_corpus(path, text_column="Utterance", label_column="Emotion", speaker_column="Speaker",
                          cache_dir=tmp_path)
    assert "audio" not in dataset.column_names
    assert len(dataset) == len(raw)
    assert sorted(dataset.features["label"].names) == sorted({r["Emotion"] for r in raw})
    assert len(dataset.features["label"].names) == 7
    assert dataset[0]["text"] == raw[0]["Utterance"]
