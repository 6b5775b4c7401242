"""train.py under torchrun on 2 CPU processes (gloo, loopback only), and the epoch plumbing that DDP relies on.

The DDP run trains 4 steps on the demo corpus (fold 5) and records, per rank, the utterance ids of every
training batch it collates. Every rank must draw the same seeded batch sequence and keep every second batch
(accelerate's BatchSamplerShard), so the ranks' data is disjoint and together is exactly what the
single-process sampler yields; the model folder written by the main process must load and predict.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate.data_loader import prepare_data_loader, skip_first_batches
from torch.utils.data import DataLoader
from transformers import TrainerControl, TrainerState

from modeling_mer import MERForSequenceClassification
from modeling_mer.data.collator import MERDataCollator
from modeling_mer.data.demo import load_demo
from modeling_mer.data.sampling import ClassBalancedSampler, LengthGroupedSampler
from modeling_mer.processing_mer import MERProcessor
from modeling_mer.training.arguments import DataArguments
from modeling_mer.training.experiment import make_folds
from modeling_mer.training.trainer import SamplerEpochCallback

REPO = Path(__file__).resolve().parents[1]
BATCH, STEPS, SEED, WORLD = 8, 4, 0, 2
TIMEOUT_S = 480  # a normal run takes ~45 s on 2 busy cores; a hung rendezvous must not hang the suite

# Runs train.py's main() unchanged; only wraps the training collator so that each rank logs the ids it trains on.
PROBE = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, os.getcwd())
    from modeling_mer.training.trainer import MERTrainer

    original = MERTrainer.get_train_dataloader

    def get_train_dataloader(self):
        collate, log = self.data_collator, os.path.join(os.environ["PROBE_DIR"], f"rank{os.environ['RANK']}.jsonl")

        def recording(features):
            with open(log, "a") as file:
                file.write(json.dumps([feature["id"] for feature in features]) + "\\n")
            return collate(features)

        self.data_collator = recording  # captured by the DataLoader built now; evaluation keeps the original
        try:
            return original(self)
        finally:
            self.data_collator = collate

    MERTrainer.get_train_dataloader = get_train_dataloader
    import train
    train.main(sys.argv[1:])
""")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def demo_train_split():
    return make_folds(load_demo(), DataArguments(folds="5"))[5]["train"]


def expected_batches(train, triplet):
    """The single-process batch sequence of epoch 0, built as MERTrainer builds its samplers."""
    if triplet:
        order = list(ClassBalancedSampler(train["label"], BATCH, num_batches=max(1, len(train) // BATCH), seed=SEED))
    else:
        order = list(LengthGroupedSampler(train["duration"], batch_size=BATCH, seed=SEED))
    batches = [order[i:i + BATCH] for i in range(0, len(order), BATCH)]
    return [[train[i]["id"] for i in batch] for batch in batches]


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["class_balanced", "length_grouped"])
def test_torchrun_two_cpu_processes(tmp_path, demo_train_split, sampler):
    triplet = sampler == "class_balanced"
    output_dir = tmp_path / "out"
    port = free_port()
    env = dict(os.environ, PROBE_DIR=str(tmp_path), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), TOKENIZERS_PARALLELISM="false")
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"  # gloo's peer connections stay on loopback too
    (tmp_path / "probe.py").write_text(PROBE)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(WORLD),
        "--master_addr", "127.0.0.1", "--master_port", str(port), str(tmp_path / "probe.py"),
        "--folds", "5", "--output_dir", str(output_dir), "--d_model", "16", "--num_crossmodal_layers", "1",
        "--num_attention_heads", "2", "--freeze_text_encoder", "true", "--max_steps", str(STEPS),
        "--per_device_train_batch_size", str(BATCH), "--eval_strategy", "no", "--load_best_model_at_end", "false",
        "--save_strategy", "no", "--logging_strategy", "steps", "--logging_steps", "1", "--warmup_steps", "0",
        "--use_cpu", "true", "--disable_tqdm", "true", "--seed", str(SEED),
        "--triplet_weight", "0.5" if triplet else "0",
    ]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]

    # Each rank trained STEPS batches (a further line is the DataLoader's one-batch look-ahead).
    seen = [[json.loads(line) for line in (tmp_path / f"rank{rank}.jsonl").read_text().splitlines()][:STEPS]
            for rank in range(WORLD)]
    assert all(len(batches) == STEPS and all(len(b) == BATCH for b in batches) for batches in seen)
    rank_ids = [{i for batch in batches for i in batch} for batches in seen]
    assert not rank_ids[0] & rank_ids[1], "both ranks trained on the same utterances: the sampler is not sharded"
    # Sharded, not re-drawn: rank r gets batches r, r + WORLD, ... of the one seeded sequence.
    expected = expected_batches(demo_train_split, triplet)
    for rank in range(WORLD):
        assert seen[rank] == expected[rank::WORLD][:STEPS]
    if triplet:
        label_of = dict(zip(demo_train_split["id"], demo_train_split["label"], strict=True))
        for batches in seen:
            for batch in batches:
                counts = np.bincount([label_of[i] for i in batch], minlength=4)
                assert sorted(counts.tolist()) == [2, 2, 2, 2]  # P=4 classes x K=2 on every rank

    # Only the main process writes the artefacts; the model folder loads and predicts.
    assert (output_dir / "results.json").is_file()
    folder = output_dir / "model"
    model = MERForSequenceClassification.from_pretrained(folder).eval()
    processor = MERProcessor.from_pretrained(folder)
    rows = [demo_train_split[i] for i in range(2)]
    with torch.no_grad():
        logits = model(**MERDataCollator(processor)(rows)).logits
    assert logits.shape == (2, 4) and torch.isfinite(logits).all()


@pytest.mark.parametrize("kind", ["class_balanced", "length_grouped"])
def test_epoch_reaches_sharded_sampler_after_resume(kind):
    """A resumed multi-process run iterates SkipBatchSampler(BatchSamplerShard(...)); accelerate's set_epoch
    does not reach a sampler that deep, so MERTrainer sets the epoch itself (SamplerEpochCallback). Here the
    Trainer's calls are replayed on the real accelerate wrappers for epoch 2, resumed after 1 step."""
    labels = [0] * 20 + [1] * 20 + [2] * 12 + [3] * 12
    dataset = list(range(len(labels)))
    epoch, skipped = 2, 1
    for rank in range(WORLD):
        # Both are flat samplers that the Trainer's own DataLoader cuts into batches of BATCH.
        if kind == "class_balanced":
            sampler, reference = (ClassBalancedSampler(labels, BATCH, seed=SEED) for _ in range(2))
        else:
            lengths = np.random.default_rng(0).uniform(1, 5, len(labels))
            sampler, reference = (LengthGroupedSampler(lengths, batch_size=BATCH, seed=SEED) for _ in range(2))
        loader = DataLoader(dataset, sampler=sampler, batch_size=BATCH, collate_fn=list)
        reference.set_epoch(epoch)
        order = list(reference)
        full = [order[i:i + BATCH] for i in range(0, len(order), BATCH)]

        callback = SamplerEpochCallback()
        callback.samplers.append(sampler)
        sharded = prepare_data_loader(loader, num_processes=WORLD, process_index=rank)
        callback.on_epoch_begin(None, TrainerState(epoch=epoch + 0.25), TrainerControl())
        resumed = skip_first_batches(sharded, skipped)
        resumed.set_epoch(epoch)  # what Trainer._run_epoch calls; alone it does not reach the sampler
        assert list(resumed) == full[rank::WORLD][skipped:]
