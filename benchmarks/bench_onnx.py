"""PyTorch fp32 eager vs ONNX Runtime fp32 vs ORT int8, side by side in one run.

    python benchmarks/bench_onnx.py                                  # roberta-base + wav2vec2-base shapes (random)
    python benchmarks/bench_onnx.py --demo-model outputs/demo/model  # + the demo model and its test-session UA

Prints utterances/s at batch 1 and batch 8 (4 s audio, 16 tokens), the ratio to PyTorch, and each engine's
own peak resident memory (VmHWM of its own spawned process: `ru_maxrss` there would read the parent's peak).
Targets (issue 11): int8 >= 2x PyTorch fp32 at both batch sizes, UA drop <= 1 point. On a shared CPU the
timings move with the other jobs on the machine, so the three engines stay loaded side by side and take turns
run by run (a load change reaches all three alike); each figure is the median of `--repeats` runs, printed
with the load average. Read the ratios, not the absolute numbers.
"""

import argparse
import io
import json
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SECONDS, TOKENS = 4.0, 16


def inputs(config, batch):
    rng = np.random.default_rng(0)
    feeds = {}
    if config.uses_text:
        feeds["input_ids"] = rng.integers(1000, 2000, (batch, TOKENS)).astype(np.int64)
        feeds["attention_mask"] = np.ones((batch, TOKENS), dtype=np.int64)
    if config.uses_audio:
        samples = int(SECONDS * 16_000)
        feeds["input_values"] = (rng.standard_normal((batch, samples)) * 0.1).astype(np.float32)
        feeds["audio_attention_mask"] = np.ones((batch, samples), dtype=np.int64)
    return feeds


def own_peak_rss_mb():
    """This process's own peak resident memory, in MB.

    Not `ru_maxrss` on Linux: the kernel carries the high-water mark across fork and exec, so a spawned child
    reports at least its parent's peak (here the parent that built and exported the base model, so every engine
    read the same figure). VmHWM belongs to the address space, which exec makes new.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, kB elsewhere


def pytorch_runner(model_dir):
    """For PyTorch eager: batch size -> a call of the model on that batch's inputs."""
    import torch

    from modeling_mer import MERForSequenceClassification

    torch.set_grad_enabled(False)
    model = MERForSequenceClassification.from_pretrained(model_dir).eval()

    def for_batch(batch):
        feeds = {key: torch.from_numpy(value) for key, value in inputs(model.config, batch).items()}
        return lambda: model(**feeds)

    return for_batch


def ort_runner(model_dir, graph):
    """For an ONNX Runtime session: batch size -> a run of the graph on that batch's inputs."""
    import onnxruntime

    from modeling_mer import MERConfig

    # Only the config: loading the torch model here would put its weights into this engine's peak RSS.
    config = MERConfig.from_pretrained(model_dir)
    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])

    def for_batch(batch):
        feeds = inputs(config, batch)
        return lambda: session.run(["logits"], feeds)

    return for_batch


def _serve(make_runner, args, connection):
    """Child process: build one engine, time one run per batch size the parent sends, end with the own peak."""
    for_batch = make_runner(*args)
    calls = {}
    while (batch := connection.recv()) is not None:
        call = calls.setdefault(batch, for_batch(batch))  # inputs built once, outside the timing
        start = time.perf_counter()
        call()
        connection.send(time.perf_counter() - start)
    connection.send(own_peak_rss_mb())


class EngineProcess:
    """One engine in its own spawned process, so that its peak RSS is its own and engines can take turns."""

    def __init__(self, make_runner, *args):
        self.connection, child = multiprocessing.get_context("spawn").Pipe()
        self.process = multiprocessing.get_context("spawn").Process(target=_serve, args=(make_runner, args, child))
        self.process.start()

    def seconds(self, batch):
        self.connection.send(batch)
        return self.connection.recv()

    def close(self):
        """Stop the engine; returns its peak RSS in MB."""
        self.connection.send(None)
        peak = self.connection.recv()
        self.process.join()
        return peak


def throughput_table(model_dir, graphs, batches, repeats):
    """{engine: {batch: utt/s, "peak_mb": MB}} for graphs {engine: ONNX path, or None for PyTorch}.

    The engines take turns run by run (round robin), so a change in the machine's load reaches all of them
    alike instead of whichever engine happened to run during it; each figure is the median of `repeats` runs.
    """
    engines = {engine: EngineProcess(pytorch_runner, str(model_dir)) if graph is None
               else EngineProcess(ort_runner, str(model_dir), str(graph)) for engine, graph in graphs.items()}
    times = {engine: {batch: [] for batch in batches} for engine in engines}
    for batch in batches:
        for engine in engines.values():
            engine.seconds(batch)  # warm-up: ORT allocations, oneDNN kernels
    for _ in range(repeats):
        for batch in batches:
            for name, engine in engines.items():
                times[name][batch].append(engine.seconds(batch))
    return {name: {**{batch: batch / statistics.median(times[name][batch]) for batch in batches},
                   "peak_mb": engine.close()} for name, engine in engines.items()}


def engine_graphs(export_dir):
    return {"pytorch fp32": None, "ORT fp32": export_dir / "model.onnx", "ORT int8": export_dir / "model_int8.onnx"}


def demo_ua(model_dir, export_dir):
    """Test-session (5) UA of the demo model: PyTorch pipeline, ORT fp32, ORT int8."""
    import soundfile
    from sklearn.metrics import balanced_accuracy_score
    from transformers import pipeline

    from mer_onnx import MERONNXPredictor
    from modeling_mer.data.demo import load_demo

    test = load_demo().filter(lambda row: row["session"] == 5)
    audio = [soundfile.read(io.BytesIO(row["audio"]["bytes"]), dtype="float32")[0] for row in test]
    texts, labels = list(test["text"]), list(test["label"])
    pipe = pipeline("multimodal-emotion-recognition", model=str(model_dir), trust_remote_code=True)
    label2id = pipe.model.config.label2id
    scores = {"pytorch fp32": pipe(audio, text=texts, batch_size=8)}
    for engine, name in (("ORT fp32", "model.onnx"), ("ORT int8", "model_int8.onnx")):
        scores[engine] = MERONNXPredictor(export_dir, name)(audio, text=texts, batch_size=8)
    return {engine: 100 * balanced_accuracy_score(labels, [label2id[r[0]["label"]] for r in results])
            for engine, results in scores.items()}


def report(title, rows, batches, ua=None):
    print(f"\n{title}")
    header = "| engine | " + " | ".join(f"utt/s b{b} (x PyTorch)" for b in batches) + " | peak RSS MB |"
    print(header + (" test UA |" if ua else ""))
    print("|" + "---|" * (len(batches) + 2 + bool(ua)))
    base = rows["pytorch fp32"]
    for engine, row in rows.items():
        cells = " | ".join(f"{row[b]:.2f} ({row[b] / base[b]:.2f}x)" for b in batches)
        print(f"| {engine} | {cells} | {row['peak_mb']:.0f} |" + (f" {ua[engine]:.1f} |" if ua else ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo-model", type=Path, default=None, help="A trained demo model folder (train.py output).")
    parser.add_argument("--skip-base", action="store_true", help="Only the demo model.")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from modeling_mer import MERConfig, MERForSequenceClassification
    from modeling_mer.export_onnx import export_folder, export_model, quantize_int8

    batches = (1, 8)
    print(f"CPU threads: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.1f} (shared machine: "
          "timings of one run can move by tens of percent; the engines take turns run by run)")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        if not args.skip_base:
            import torch

            torch.manual_seed(0)
            model = MERForSequenceClassification(MERConfig(freeze_feature_encoder=False)).eval()  # base shapes
            model.save_pretrained(scratch / "base")
            start = time.perf_counter()
            export_model(model, scratch / "base_onnx" / "model.onnx")
            quantize_int8(scratch / "base_onnx" / "model.onnx", scratch / "base_onnx" / "model_int8.onnx")
            print(f"base export + int8 quantization: {time.perf_counter() - start:.0f} s")
            del model
            report("roberta-base + wav2vec2-base shapes, random init, 4 s audio",
                   throughput_table(scratch / "base", engine_graphs(scratch / "base_onnx"), batches, args.repeats), batches)
        if args.demo_model is not None:
            from transformers import AutoProcessor

            model = MERForSequenceClassification.from_pretrained(args.demo_model).eval()
            processor = AutoProcessor.from_pretrained(args.demo_model, trust_remote_code=True)
            export_folder((model, processor), scratch / "demo_onnx", quantize="int8")
            ua = demo_ua(args.demo_model, scratch / "demo_onnx")
            report("demo model (outputs of train.py examples/configs/demo.yaml)",
                   throughput_table(args.demo_model, engine_graphs(scratch / "demo_onnx"), batches, args.repeats), batches, ua)
            print("\n" + json.dumps({"demo_test_ua": ua}))
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
