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


# ---------------------------------------------------------------- --output: streamed, resumable, sharded


def write_manifest(folder, rows, name="many.csv", encoding="utf-8"):
    """A manifest that lists the 12 clips round-robin `rows` times over (the same file may appear twice)."""
    lines = ["audio,text"] + [f"clips/clip{row % 12}.wav,words {row}" for row in range(rows)]
    path = folder / name
    path.write_text("\n".join(lines) + "\n", encoding=encoding)
    return path


def read_jsonl(*paths):
    return [json.loads(line) for path in paths if path.exists() for line in path.read_text().splitlines()]


def test_output_streams_and_resumes_where_it_stopped(folders, tmp_path):
    manifest, output = write_manifest(folders, 7, "seven.csv"), tmp_path / "preds.jsonl"
    done = mer_predict("--manifest", manifest, "--model", folders / "model", "--output", output, home=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_jsonl(output)
    assert sorted(r["index"] for r in records) == list(range(7))
    assert all(r["text"] == f"words {r['index']}" and len(r["scores"]) == 4 for r in records)
    # A run killed after 4 results, its last line cut short: the rerun answers only the 3 missing inputs.
    lines = output.read_text().splitlines()
    output.write_text("\n".join(lines[:4]) + "\n" + lines[4][:10])
    done = mer_predict("--manifest", manifest, "--model", folders / "model", "--output", output, home=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "wrote 3 results" in done.stderr and "4 already done" in done.stderr
    assert sorted(r["index"] for r in read_jsonl(output)) == list(range(7))  # every line whole, none twice


def test_accelerate_two_processes_split_the_manifest(folders, tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    manifest, output = write_manifest(folders, 9, "nine.csv"), tmp_path / "preds.jsonl"
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": str(Path(__file__).parents[1])}
    # `--multi_gpu` is accelerate's multi-process launcher (torchrun); on a machine without CUDA its processes use
    # gloo on the CPU (`--cpu` would run a single process).
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--main_process_port", str(port), "-m", "modeling_mer.cli",
               "--manifest", str(manifest), "--model", str(folders / "model"), "--output", str(output)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    shards = [tmp_path / "preds.rank0.jsonl", tmp_path / "preds.rank1.jsonl"]
    per_rank = [[r["index"] for r in read_jsonl(shard)] for shard in shards]
    assert all(per_rank), per_rank  # both processes worked
    union = per_rank[0] + per_rank[1]
    assert sorted(union) == list(range(9))  # exactly the input, nothing twice
    assert not output.exists()


def test_ctrl_c_exits_130_and_keeps_the_finished_results(folders, tmp_path):
    import signal
    import time

    manifest, output = write_manifest(folders, 400, "long.csv"), tmp_path / "preds.jsonl"
    script = Path(sys.executable).with_name("mer-predict")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "modeling_mer.cli"]
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([*command, "--manifest", str(manifest), "--model", str(folders / "model"),
                                "--output", str(output), "--batch-size", "1"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               # As a foreground command: a shell starts background jobs (`cmd &`, CI runners)
                               # with SIGINT ignored, which the child would inherit and never see Ctrl-C.
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if output.exists() and len(output.read_text().splitlines()) >= 2:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == f"mer-predict: interrupted; the finished results are in {output}"
    records = read_jsonl(output)  # every line written is whole
    assert 2 <= len(records) < 400


# ---------------------------------------------------------------- error messages


def test_missing_model_folder_is_named(tmp_path, capsys):
    from modeling_mer.cli import main

    missing = tmp_path / "runs" / "model"
    assert main(["a.wav", "--text", "hi", "--model", str(missing)]) == 2
    error = capsys.readouterr().err
    assert f"--model {missing}: no such model folder" in error and "Repo id" not in error


def test_empty_audio_cell_names_the_row(tmp_path):
    (tmp_path / "gap.csv").write_text("audio,text\na.wav,hi\n,there\n")
    with pytest.raises(ValueError, match=r"row 2 \(line 3\) has an empty `audio` cell"):
        read_manifest(tmp_path / "gap.csv")


def test_manifest_with_a_byte_order_mark(tmp_path):
    (tmp_path / "bom.csv").write_text("audio,text\nx.wav,hello\n", encoding="utf-8-sig")
    assert read_manifest(tmp_path / "bom.csv") == [{"audio": str(tmp_path / "x.wav"), "text": "hello"}]


def test_damaged_weights_are_an_error_naming_the_model_never_bare_nan(folders, tmp_path):
    """A model with NaN weights gives NaN scores: an error that names the folder, and nothing that strict JSON
    readers reject (a bare NaN) on stdout."""
    import torch
    from tiny_folders import tiny_model
    from tiny_models import tiny_processor

    model = tiny_model()
    with torch.no_grad():
        model.classifier[-1].bias.fill_(float("nan"))
    model.save_pretrained(tmp_path / "nan_model")
    tiny_processor().save_pretrained(tmp_path / "nan_model")
    done = mer_predict(folders / "clips" / "clip0.wav", "--text", "hi", "--model", tmp_path / "nan_model", "--json",
                       home=tmp_path)
    assert done.returncode == 2
    assert f"{tmp_path / 'nan_model'} gave non-finite scores" in done.stderr and "Re-download or re-save" in done.stderr
    assert "NaN" not in done.stdout


def test_output_mode_errors_name_the_input(folders, tmp_path):
    (tmp_path / "gone.csv").write_text(f"audio,text\n{folders / 'clips' / 'clip0.wav'},hi\n{tmp_path / 'gone.wav'},x\n")
    done = mer_predict("--manifest", tmp_path / "gone.csv", "--model", folders / "model", "--output",
                       tmp_path / "preds.jsonl", home=tmp_path)
    assert done.returncode == 2
    assert f"{tmp_path / 'gone.wav'} (item 1): audio file not found" in done.stderr


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
