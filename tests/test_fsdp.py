"""FSDP2 on 2 CPU processes (gloo): the model shards per encoder layer, as examples/configs/fsdp.yaml asks, and trains.

accelerate 1.16 does not run FSDP without CUDA (with `--config_file examples/configs/fsdp.yaml` and no GPU its
processes fall back to DistributedType.NO; with `use_cpu: true` to MULTI_CPU, i.e. DDP), so fsdp.yaml itself
cannot be run here. This test applies torch's `fully_shard` the way that config's TRANSFORMER_BASED_WRAP does
(each encoder layer a unit, the fusion and head in the root unit) and checks that sharded training works.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, sys
    import torch, torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor
    from tiny_folders import tiny_model
    from tiny_models import random_batch, tiny_processor

    dist.init_process_group("gloo")
    model = tiny_model(triplet_weight=0.0).train()
    units = [m for m in model.modules() if type(m).__name__ in ("BertLayer", "Wav2Vec2EncoderLayer")]
    for module in units:
        fully_shard(module)
    fully_shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = random_batch(tiny_processor())
    batch["labels"] = torch.tensor([0, 1])
    losses = []
    for _ in range(4):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    sharded = all(isinstance(p, DTensor) for p in model.parameters())
    with open(f"{sys.argv[1]}/rank{dist.get_rank()}.json", "w") as handle:  # ranks' stdout lines interleave
        json.dump({"rank": dist.get_rank(), "units": len(units), "sharded": sharded, "losses": losses}, handle)
    dist.destroy_process_group()
""")


def test_fully_shard_two_cpu_processes(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "fsdp_probe.py").write_text(SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
           "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                           "127.0.0.1", "--master_port", str(port), str(tmp_path / "fsdp_probe.py"), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["rank"] for r in results] == [0, 1]
    assert all(r["sharded"] and r["units"] == 4 for r in results)  # 2 text + 2 speech encoder layers
    assert results[0]["losses"] == results[1]["losses"]  # one model, data the same on both ranks
    assert results[0]["losses"][-1] < results[0]["losses"][0]
