"""benchmarks/bench_onnx.py's peak-memory column: each engine's own process, not the parent's high-water mark."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_onnx import EngineProcess, own_peak_rss_mb  # noqa: E402

HELD_MB, ENGINE_MB = 400, 150


def touching_runner(megabytes):
    """A stand-in engine that writes `megabytes` when built (its own peak must show them) and runs nothing."""
    weights = np.ones(megabytes * 2**20 // 8)
    return lambda batch: lambda: weights[:batch].sum()


def test_an_engine_reports_its_own_peak_not_its_parents():
    held = np.ones(HELD_MB * 2**20 // 8)  # written, so resident in this (the parent) process
    assert own_peak_rss_mb() >= HELD_MB
    # ru_maxrss in the spawned child would read >= HELD_MB: Linux carries the high-water mark through fork + exec.
    engine = EngineProcess(touching_runner, ENGINE_MB)
    assert engine.seconds(8) >= 0
    assert ENGINE_MB <= engine.close() < HELD_MB
    del held
