"""mer-predict: files with transcripts, a CSV manifest with ASR for missing ones, JSON, progress bar, errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_folders import ASR_WORD, save_tiny_asr, save_tiny_model, write_wav

from modeling_mer.cli import _name_item, build_parser, collect_items, longest_first, read_manifest


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    save_tiny_model(root / "model")
    save_tiny_asr(root / "asr")
    clips = root / "clips"
    clips.mkdir()
    for index in range(12):
        write_wav(clips / f"clip{index}.wav", 2000 + 500 * index, seed=index)
    return root


def mer_predict(*args, home):
    # The installed console script, in a fresh process as a user would run it.
    script = Path(sys.executable).with_name("mer-predict")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "modeling_mer.cli"]
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*command, *map(str, args)], env=env, capture_output=True, text=True, timeout=300)


def test_files_with_transcripts(folders, tmp_path):
    clips = folders / "clips"
    done = mer_predict(clips / "clip0.wav", clips / "clip1.wav", "--text", "i am happy", "--text", "no",
                       "--model", folders / "model", "--top-k", "2", home=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [str(clips / "clip0.wav"), str(clips / "clip1.wav")]
    assert all(len(line.split(":", 1)[1].split(",")) == 2 for line in lines)  # top-k 2


def test_manifest_json_asr_and_progress_bar(folders, tmp_path):
    rows = ["audio,text"] + [f"clips/clip{i}.wav,{'' if i % 3 == 0 else 'so calm today'}" for i in range(12)]
    (folders / "manifest.csv").write_text("\n".join(rows) + "\n")
    done = mer_predict("--manifest", folders / "manifest.csv", "--model", folders / "model", "--json",
                       "--asr-model", folders / "asr", "--batch-size", "4", home=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    records = json.loads(done.stdout)
    assert [Path(r["audio"]).name for r in records] == [f"clip{i}.wav" for i in range(12)]
    for index, record in enumerate(records):
        assert record["transcribed"] == (index % 3 == 0)
        assert record["text"] == (ASR_WORD if index % 3 == 0 else "so calm today")
        assert len(record["scores"]) == 4 and abs(sum(s["score"] for s in record["scores"]) - 1) < 1e-5
    assert "12/12" in done.stderr  # tqdm's bar on a list this long


def test_batches_longest_first_but_answers_in_input_order(folders, tmp_path):
    """Files are batched by length; the output follows the command line and equals unbatched scoring."""
    clips = folders / "clips"
    order = [3, 0, 11, 5, 1, 8]  # mixed lengths (clip i is 2000 + 500 i samples)
    texts = [f"words for clip {index}" for index in order]
    args = [*(clips / f"clip{index}.wav" for index in order), *(part for text in texts for part in ("--text", text)),
            "--model", folders / "model", "--json"]
    batched = mer_predict(*args, "--batch-size", "4", home=tmp_path)
    single = mer_predict(*args, "--batch-size", "1", home=tmp_path)
    assert batched.returncode == 0 and single.returncode == 0, batched.stderr[-3000:] + single.stderr[-3000:]
    batched, single = json.loads(batched.stdout), json.loads(single.stdout)
    assert [Path(r["audio"]).name for r in batched] == [f"clip{index}.wav" for index in order]
    assert [r["text"] for r in batched] == texts
    for with_padding, alone in zip(batched, single, strict=True):
        scores = {s["label"]: s["score"] for s in alone["scores"]}
        assert all(abs(s["score"] - scores[s["label"]]) < 1e-5 for s in with_padding["scores"])


def test_longest_first_puts_unreadable_files_first(folders):
    clips = folders / "clips"
    items = [{"audio": str(clips / "clip1.wav")}, {"audio": str(clips / "nope.wav")}, {"audio": str(clips / "clip4.wav")}]
    assert [(Path(i["audio"]).name, i["position"]) for i in longest_first(items)] == [
        ("nope.wav", 1), ("clip4.wav", 2), ("clip1.wav", 0)]


def test_errors_name_the_file(folders, tmp_path):
    clips = folders / "clips"
    done = mer_predict(clips / "clip0.wav", clips / "missing.wav", "--text", "a", "--text", "b",
                       "--model", folders / "model", home=tmp_path)
    assert done.returncode == 2
    assert f"{clips / 'missing.wav'} (item 1): audio file not found" in done.stderr
    done = mer_predict(clips / "clip0.wav", "--model", folders / "model", home=tmp_path)
    assert done.returncode == 2 and "no transcript" in done.stderr and "asr_model" in done.stderr


def test_text_count_must_match_the_files():
    args = build_parser().parse_args(["a.wav", "b.wav", "--text", "only one", "--model", "m"])
    with pytest.raises(ValueError, match="2 audio files but 1 --text"):
        collect_items(args)
    with pytest.raises(ValueError, match="No input"):
        collect_items(build_parser().parse_args(["--model", "m"]))


def test_manifest_needs_an_audio_column(tmp_path):
    (tmp_path / "bad.csv").write_text("path,text\nx.wav,hi\n")
    with pytest.raises(ValueError, match="`audio` column"):
        read_manifest(tmp_path / "bad.csv")
    (tmp_path / "good.csv").write_text("audio,text\nx.wav,\n/abs/y.wav,hello\n")
    assert read_manifest(tmp_path / "good.csv") == [{"audio": str(tmp_path / "x.wav"), "text": None},
                                                    {"audio": "/abs/y.wav", "text": "hello"}]


def test_item_numbers_map_back_to_files():
    items = [{"audio": "a.wav"}, {"audio": "b.wav"}]
    assert _name_item("item 1: too short", items) == "b.wav (item 1): too short"
    # After longest_first the pipeline's position differs from the command line's; the latter is reported.
    assert _name_item("item 0: too short", [{"audio": "b.wav", "position": 1}]) == "b.wav (item 1): too short"
    assert _name_item("something else", items) == "something else"


def test_timeline_csv_and_plot(folders, tmp_path):
    import csv

    import numpy as np

    from modeling_mer.data import load_demo
    from modeling_mer.data.conversation import make_conversation

    conversation = make_conversation(load_demo(), range(11, 1000, 200), seed=3)  # 5 utterances
    audio = write_wav(tmp_path / "talk.wav", conversation.waveform)
    (tmp_path / "words.json").write_text(json.dumps(conversation.words))
    done = mer_predict(audio, "--model", folders / "model", "--timeline", tmp_path / "out.csv", "--words",
                       tmp_path / "words.json", "--vad", "energy", "--plot", tmp_path / "timeline.png",
                       home=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(tmp_path / "out.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["text"] for row in rows] == [u["text"] for u in conversation.utterances]
    assert list(rows[0])[:5] == ["start", "end", "text", "label", "score"] and len(rows[0]) == 5 + 4
    for row, utterance in zip(rows, conversation.utterances, strict=True):
        assert abs(float(row["start"]) - utterance["start"]) < 0.15 and abs(float(row["end"]) - utterance["end"]) < 0.15
        scores = np.array([float(row[label]) for label in list(row)[5:]])
        assert abs(scores.sum() - 1) < 1e-3 and row["label"] == list(row)[5:][scores.argmax()]
    assert (tmp_path / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_timeline_needs_one_file(folders, tmp_path):
    clips = folders / "clips"
    done = mer_predict(clips / "clip0.wav", clips / "clip1.wav", "--model", folders / "model", "--timeline",
                       tmp_path / "out.csv", home=tmp_path)
    assert done.returncode == 2 and "exactly one audio file" in done.stderr
