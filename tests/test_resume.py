"""Kill train.py mid-run, resume it with --resume_from_checkpoint, and get the uninterrupted run's weights.

A small corpus cut from the demo (`tiny_corpora`) makes an epoch 3 optimizer steps long, so checkpoint-4
sits one step into the *second* epoch: the resumed run has to re-create epoch 1's batch order (not epoch
0's) and skip exactly the batch already trained. Run with both training orders: length-grouped batches
(the default) and class-balanced batches (triplet_weight > 0). The victim is
SIGKILLed as soon as checkpoint-4 is complete on disk (its trainer_state.json, written last, parses).

The comparison is exact (torch.equal on every tensor): on CPU with the same thread count, the same batches,
weights, optimizer state and restored RNG states give bit-identical arithmetic, so any difference at all
means the resumed run saw different data or state, which is what this test is for.
"""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modeling_mer.data.demo import load_demo
from modeling_mer.training.resume import check_resume_value, check_same_settings, checkpoint_for, start_fold

REPO = Path(__file__).resolve().parents[1]
MAX_STEPS, SAVE_STEPS, KILL_AT = 8, 2, 4
TIMEOUT_S = 300  # per train.py run; a normal one takes ~15 s on 2 busy cores
# Per sampler: utterances per speaker so that an epoch is 3 optimizer steps at batch size 8 (train = 7 speakers).
#   length-grouped: 7 x 3 = 21 -> batches of 8, 8, 5; class-balanced: 7 x 4 = 28 -> 28 // 8 = 3 batches of 4 x 2.
CASES = {"length_grouped": dict(per_speaker=3, triplet_weight="0"),
         "class_balanced": dict(per_speaker=4, triplet_weight="0.5")}


@pytest.fixture(scope="module")
def tiny_corpora(tmp_path_factory):
    """{case: metadata.csv}: per speaker, `per_speaker` utterances with rotating labels, so every class appears."""
    demo = load_demo()
    names = demo.features["label"].names
    speakers, labels = demo["speaker"], demo["label"]
    corpora = {}
    for case, settings in CASES.items():
        root = tmp_path_factory.mktemp(case)
        rows = []
        for position, speaker in enumerate(sorted(set(speakers))):
            for offset in range(settings["per_speaker"]):
                wanted = (position + offset) % len(names)
                index = next(i for i, (s, y) in enumerate(zip(speakers, labels, strict=True))
                             if s == speaker and y == wanted)
                row = demo[index]
                (root / row["audio"]["path"]).write_bytes(row["audio"]["bytes"])
                rows.append(dict(file_name=row["audio"]["path"], text=row["text"], label=names[row["label"]],
                                 speaker=speaker, session=row["session"], duration=row["duration"]))
        with open(root / "metadata.csv", "w", newline="") as file:
            writer = csv.DictWriter(file, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        corpora[case] = root / "metadata.csv"
    return corpora


def command(corpus, output_dir, triplet_weight, *extra):
    return [sys.executable, "train.py", "--corpus", str(corpus), "--folds", "5", "--output_dir", str(output_dir),
            "--d_model", "16", "--num_crossmodal_layers", "1", "--num_attention_heads", "2",
            "--freeze_text_encoder", "true", "--triplet_weight", triplet_weight,
            "--max_steps", str(MAX_STEPS), "--per_device_train_batch_size", "8", "--warmup_steps", "2",
            "--eval_strategy", "no", "--load_best_model_at_end", "false",
            # save_total_limit above the number of checkpoints: the one being resumed from is never rotated away.
            "--save_strategy", "steps", "--save_steps", str(SAVE_STEPS), "--save_total_limit", "10",
            "--logging_strategy", "steps", "--logging_steps", "1", "--use_cpu", "true", "--disable_tqdm", "true",
            "--seed", "0", *extra]


def fold_dir(output_dir):
    return output_dir / "runs" / "full_model" / "fold_5"


def checkpoint_complete(checkpoint):
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())  # written after weights, optimizer and RNG
        return True
    except (OSError, ValueError):
        return False


def losses(checkpoint):
    history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    return [(entry["step"], entry["loss"], entry["ce_loss"], entry["triplet_loss"])
            for entry in history if "loss" in entry]


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_kill_and_resume_gives_the_uninterrupted_weights(tmp_path, tiny_corpora, case):
    triplet_weight = CASES[case]["triplet_weight"]
    # One thread each: the two concurrent runs share 2 cores, and both runs of a pair must use the same count.
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    reference_dir, victim_dir = tmp_path / "reference", tmp_path / "victim"
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("reference", "victim", "resumed")}

    def log_tail(name):
        logs[name].flush()
        return (tmp_path / f"{name}.log").read_text()[-4000:]

    reference = subprocess.Popen(command(tiny_corpora[case], reference_dir, triplet_weight), cwd=REPO, env=env,
                                 stdout=logs["reference"], stderr=subprocess.STDOUT)
    victim = subprocess.Popen(command(tiny_corpora[case], victim_dir, triplet_weight), cwd=REPO, env=env,
                              stdout=logs["victim"], stderr=subprocess.STDOUT)
    try:
        checkpoint = fold_dir(victim_dir) / f"checkpoint-{KILL_AT}"
        deadline = time.monotonic() + TIMEOUT_S
        while not checkpoint_complete(checkpoint):
            assert victim.poll() is None, f"the run ended before checkpoint-{KILL_AT}:\n{log_tail('victim')}"
            assert time.monotonic() < deadline, f"no checkpoint-{KILL_AT} in {TIMEOUT_S} s:\n{log_tail('victim')}"
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=60) == -signal.SIGKILL, "the run finished before it could be interrupted"
        assert not (victim_dir / "model").exists()

        resumed = subprocess.run(command(tiny_corpora[case], victim_dir, triplet_weight,
                                         "--resume_from_checkpoint", str(checkpoint)),
                                 cwd=REPO, env=env, stdout=logs["resumed"], stderr=subprocess.STDOUT,
                                 timeout=TIMEOUT_S)
        assert resumed.returncode == 0, log_tail("resumed")
        assert reference.wait(timeout=TIMEOUT_S) == 0, log_tail("reference")
    finally:
        for process in (reference, victim):
            if process.poll() is None:
                process.kill()
                process.wait()
        for file in logs.values():
            file.close()

    resumed_log = (tmp_path / "resumed.log").read_text().splitlines()
    trained_after_resume = [line for line in resumed_log if line.startswith("{'loss'")]
    assert len(trained_after_resume) == MAX_STEPS - KILL_AT  # it resumed rather than starting over
    # Same per-step losses after the resume point (so the same batches, in the same order), and same weights.
    final = f"checkpoint-{MAX_STEPS}"
    assert losses(fold_dir(victim_dir) / final) == losses(fold_dir(reference_dir) / final)
    expected = load_file(reference_dir / "model" / "model.safetensors")
    got = load_file(victim_dir / "model" / "model.safetensors")
    assert expected.keys() == got.keys()
    different = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert not different, f"{len(different)} tensors differ after the resume, e.g. {different[:3]}"


@pytest.mark.slow
def test_resume_last_keeps_finished_folds_and_trains_the_rest(tmp_path, tiny_corpora):
    """`--resume_from_checkpoint last` over two folds: the finished fold is reloaded, the lost one retrained."""
    corpus, triplet_weight = tiny_corpora["length_grouped"], CASES["length_grouped"]["triplet_weight"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    output_dir = tmp_path / "run"
    two_folds = ("--cv", "loso", "--folds", "4,5")

    def train(*extra):
        completed = subprocess.run(command(corpus, output_dir, triplet_weight, *two_folds, *extra), cwd=REPO,
                                   env=env, capture_output=True, text=True, timeout=2 * TIMEOUT_S)
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
        return completed.stdout + completed.stderr

    train()
    first_results = json.loads((output_dir / "results.json").read_text())["folds"]
    first_model = load_file(output_dir / "model" / "model.safetensors")
    fold_4 = output_dir / "runs" / "full_model" / "fold_4"
    fold_4_weights = (fold_4 / "model.safetensors").read_bytes()
    # The run "died" before fold 5 began: its folder is gone.
    shutil.rmtree(fold_dir(output_dir))

    log = train("--resume_from_checkpoint", "last")
    assert log.count("finished in an earlier run") == 1
    assert len([line for line in log.splitlines() if line.startswith("{'loss'")]) == MAX_STEPS  # fold 5 only
    assert (fold_4 / "model.safetensors").read_bytes() == fold_4_weights
    assert json.loads((output_dir / "results.json").read_text())["folds"] == first_results
    final = load_file(output_dir / "model" / "model.safetensors")
    assert all(torch.equal(first_model[name], final[name]) for name in first_model)

    # Another learning rate with `last` would mix two experiments: refused before any fold trains.
    refused = subprocess.run(command(corpus, output_dir, triplet_weight, *two_folds, "--resume_from_checkpoint",
                                     "last", "--learning_rate", "0.01"),
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert refused.returncode != 0
    assert "fold_4 was trained with other settings (training.learning_rate: 0.001 -> 0.01)" in refused.stderr
    assert "{'loss'" not in refused.stdout + refused.stderr


def test_resume_last_picks_the_newest_complete_checkpoint(tmp_path):
    for step, state in ((2, "{}"), (4, "{}"), (6, None), (8, "{trunc")):  # 6 and 8: killed while saving
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    assert checkpoint_for("last", tmp_path) == str(tmp_path / "checkpoint-4")
    assert checkpoint_for("last", tmp_path / "never_started") is None
    assert checkpoint_for(None, tmp_path) is None


def test_one_checkpoint_path_for_many_folds_is_refused(tmp_path):
    with pytest.raises(ValueError, match="resume_from_checkpoint last"):
        check_resume_value(str(tmp_path / "checkpoint-4"), runs=5)
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        check_resume_value(str(tmp_path / "checkpoint-4"), runs=1)
    check_resume_value("last", runs=25)  # accepted


def test_resume_last_refuses_a_fold_trained_with_other_settings(tmp_path):
    settings = {"training": {"learning_rate": 1e-3, "seed": 0}, "model": {"modalities": "text,audio"},
                "split_ids": {"train": "ab12"}}
    (tmp_path / "fold_result.json").write_text("{}")  # left by an earlier run in this folder
    start_fold(tmp_path, settings)
    assert not (tmp_path / "fold_result.json").exists()  # a fresh start never passes for a finished fold
    check_same_settings("last", tmp_path, settings)  # same settings: resumes
    changed = {**settings, "training": {"learning_rate": 5e-4, "seed": 0}}
    with pytest.raises(ValueError, match=r"training.learning_rate: 0.001 -> 0.0005.*new --output_dir"):
        check_same_settings("last", tmp_path, changed)
    check_same_settings(None, tmp_path, changed)  # a fresh run just starts over in that folder
