"""Fusion overhead: MERForSequenceClassification vs its two bare encoders, full-size shapes, random init.

`MERConfig()` defaults (roberta-base + wav2vec2-base shapes), batch 4 x 5 s of audio + 32 tokens, no padding, one
set of encoder weights. `enc`: text + speech encoder called as MERModel calls them; `mer_off` / `mer_on`: the model
without / with the prosody branch; `fusion mer_*`: the same fed the encoders' outputs (text_encoder_states /
audio_encoder_states), giving (enc + fusion) / enc free of the encoders' noise. Forward: eval, no_grad; fwd+bwd:
train mode, MER's joint loss, the encoders' output means. Rounds time every variant with torch.utils.benchmark
(blocked_autorange, order rotated); a ratio is the median of per-round ratios. Peak memory of a forward: a fresh
process per variant, VmHWM (reset first) on CPU, max_memory_allocated on CUDA. The breakdown is torch.profiler with
record_function labels from forward hooks. Targets: MER / enc <= 1.10 prosody on, <= 1.03 off; memory <= 1.15.

    python benchmarks/bench_fusion_overhead.py                      # about 5 minutes on 2 CPU cores
    python benchmarks/bench_fusion_overhead.py --device cuda --dtype bfloat16
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils import benchmark

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from modeling_mer import MERConfig, MERForSequenceClassification  # noqa: E402
from modeling_mer.configuration_mer import SAMPLING_RATE  # noqa: E402

TARGETS = {"mer_on": 1.10, "mer_off": 1.03, "memory": 1.15}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                        help="bf16/fp16 run under torch.autocast with fp32 weights")
    for flag, kind, default in (("--batch-size", int, 4), ("--seconds", float, 5.0), ("--tokens", int, 32)):
        parser.add_argument(flag, type=kind, default=default)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; ratios are their median")
    parser.add_argument("--min-run-time", type=float, default=1.0, help="seconds per blocked_autorange")
    parser.add_argument("--memory-child", choices=("enc", "mer_off", "mer_on"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def build(args, device):
    torch.manual_seed(0)
    on = MERForSequenceClassification(MERConfig(use_prosody_branch=True))
    off = MERForSequenceClassification(MERConfig(use_prosody_branch=False))
    off.mer.text_encoder.model = on.mer.text_encoder.model  # same encoders: same weights, one copy in memory
    off.mer.speech_encoder.model = on.mer.speech_encoder.model
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 1000, (args.batch_size, args.tokens), generator=generator)  # avoid <pad> = 1
    audio = 0.1 * torch.randn(args.batch_size, int(args.seconds * SAMPLING_RATE), generator=generator)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "input_values": audio,
              "audio_attention_mask": torch.ones_like(audio, dtype=torch.long),
              "labels": torch.arange(args.batch_size) // 2 % on.config.num_labels}  # pairs: triplets exist
    return {"mer_on": on.to(device), "mer_off": off.to(device)}, {k: v.to(device) for k, v in inputs.items()}


def step_fn(name, models, inputs, args, train):
    """A no-argument callable: one forward (eval, no_grad) or forward+backward (train) of `name`."""
    model = models["mer_on" if name == "enc" else name.split()[-1]]
    mer, labels = model.mer, inputs["labels"]
    autocast = (contextlib.nullcontext() if args.dtype == "float32" else
                torch.autocast(inputs["input_ids"].device.type, dtype=getattr(torch, args.dtype)))
    cached = {}
    if name.startswith("fusion"):
        with torch.no_grad(), autocast:
            cached = {"text_encoder_states": mer.text_encoder(inputs["input_ids"], inputs["attention_mask"]),
                      "audio_encoder_states": mer.speech_encoder(inputs["input_values"],
                                                                 inputs["audio_attention_mask"])[0]}

    def run():
        model.train(train)
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the same dropout / SpecAugment draws for every variant
        with torch.set_grad_enabled(train), autocast:
            if name == "enc":
                text = mer.text_encoder.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
                frames, _ = mer.speech_encoder(inputs["input_values"], inputs["audio_attention_mask"])
                result = text.last_hidden_state.float().mean() + frames.float().mean()
            else:
                states = {key: value.clone().requires_grad_(train) for key, value in cached.items()}
                output = model(inputs["input_ids"], inputs["attention_mask"], inputs["input_values"],
                               inputs["audio_attention_mask"], labels=labels if train else None, **states)
                result = output.loss if train else output.logits
        if train:
            result.backward()  # (benchmark.Timer synchronises CUDA itself)

    return run


def interleaved(names, models, inputs, args, train):
    runs = {name: step_fn(name, models, inputs, args, train) for name in names}
    times = {name: [] for name in names}
    for index in range(args.rounds):
        for name in names[index % len(names):] + names[:index % len(names)]:
            timer = benchmark.Timer("run()", globals={"run": runs[name]}, num_threads=torch.get_num_threads())
            times[name].append(timer.blocked_autorange(min_run_time=args.min_run_time).median)
        print(f"  {'fwd+bwd' if train else 'fwd'} round {index + 1}: "
              + "  ".join(f"{name} {times[name][-1]:.3f}s" for name in names), flush=True)
    return times


def peak_memory(name, args):
    # Peak bytes of one eval forward of `name` in a fresh process (on CPU the peak RSS is per process).
    command = [sys.executable, __file__, "--memory-child", name, "--device", args.device, "--dtype", args.dtype,
               "--batch-size", str(args.batch_size), "--seconds", str(args.seconds), "--tokens", str(args.tokens)]
    # A fixed mmap threshold hands freed tensors back to the OS, so the RSS follows live memory.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    return json.loads(subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout)


def memory_child(args):
    device = torch.device(args.device)
    models, inputs = build(args, device)
    keep = "mer_off" if args.memory_child == "mer_off" else "mer_on"  # enc runs mer_on's encoders
    run = step_fn(args.memory_child, {keep: models.pop(keep)}, inputs, args, train=False)
    del models  # the model not measured goes before the measurement
    run()  # warm-up: lazily allocated buffers and kernels
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        run()
        return print(json.dumps(torch.cuda.max_memory_allocated()))
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (peak RSS) to the current RSS
    run()
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    print(json.dumps(int(status["VmHWM"].split()[0]) * 1024))


def label_modules(model):
    """Forward hooks open a record_function range per piece (several modules may share one), in data-flow order."""
    mer, prosody = model.mer, model.mer.speech_encoder.prosody
    pieces = [("text encoder", [mer.text_encoder]), ("speech encoder (wav2vec2)", [mer.speech_encoder.model]),
              ("prosody: STFT + log-mel + MFCC", [prosody.spectral]), ("prosody: MFCC BiLSTM", [prosody.mfcc_lstm]),
              ("prosody: log-mel CNN", [*prosody.spectrogram_cnn, prosody.spectrogram_projection]),
              ("prosody: guided attention + proj + norm", [prosody.query_projection, prosody.key_projection,
               prosody.guided_attention, prosody.output_projection, prosody.output_norm]),
              ("fusion: input projections", [mer.text_projection, mer.audio_projection]),
              ("fusion: crossmodal text->audio", [mer.text_to_audio]), ("fusion: crossmodal audio->text",
                                                                         [mer.audio_to_text]),
              ("fusion: self-attention (both)", [mer.text_self_attention, mer.audio_self_attention]),
              ("fusion: embedding + classifier", [mer.embedding, model.classifier])]
    for label, modules in pieces:
        for module in modules:
            module.register_forward_pre_hook(lambda m, a, label=label: m.__dict__.setdefault(
                "_ranges", []).append(record_function(label).__enter__()))
            module.register_forward_hook(lambda m, a, o: m._ranges.pop().__exit__(None, None, None))
    return [label for label, _ in pieces]


def breakdown(models, inputs, args, enc_seconds):
    labels = label_modules(models["mer_on"])
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
    for train in (False, True):
        run = step_fn("mer_on", models, inputs, args, train)
        run()  # warm-up outside the profile
        with profile(activities=activities) as profiler, record_function("MER total"):
            run()
        events = {event.key: event.cpu_time_total / 1e3 for event in profiler.key_averages()}  # host ms
        rest = "rest: checks, positions, pooling" + (", loss, backward" if train else "")
        events[rest] = events["MER total"] - sum(events.get(label, 0.0) for label in labels)
        print(f"\n== {'fwd+bwd' if train else 'fwd'} of mer_on under torch.profiler (host ms; % of enc's median) ==")
        for label, milliseconds in ((label, events.get(label, 0.0)) for label in ["MER total", *labels, rest]):
            print(f"{label:<52}{milliseconds:>10.1f}{milliseconds / 10 / enc_seconds[train]:>7.1f}%")
        if train:  # backward ops carry no module label: the heaviest operators of the whole step instead
            print("heaviest operators (self time, forward and backward):")
            for event in sorted(profiler.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]:
                print(f"  {event.key[:58]:<58}{event.self_cpu_time_total / 1e3:>10.1f} ms")


def main(argv=None):
    args = parse_args(argv)
    if args.memory_child:
        return memory_child(args)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.device}, {args.dtype}; batch {args.batch_size} "
          f"x {args.seconds:g} s + {args.tokens} tokens (on a shared CPU, other jobs' noise is in every round)", flush=True)
    models, inputs = build(args, torch.device(args.device))
    names = ["enc", "mer_off", "mer_on", "fusion mer_off", "fusion mer_on"]
    results = {train: interleaved(names, models, inputs, args, train) for train in (False, True)}
    memory = {name: peak_memory(name, args) for name in names[:3]}
    print(f"\n{'ratio (median over rounds)':<52}{'value':>8}{'target':>9}  verdict")
    # "fusion X" ran without the encoders: 1 + fusion / enc is the full model's ratio.
    rows = [(f"{'fwd+bwd' if train else 'fwd'}: {name} / enc", statistics.median(name.startswith("fusion") + a / b
             for a, b in zip(times[name], times["enc"], strict=True)), TARGETS[name.split()[-1]])
            for train, times in results.items() for name in names[1:]]
    rows += [(f"peak memory fwd: {name} / enc ({memory[name] / 2**20:.0f} vs {memory['enc'] / 2**20:.0f} MiB)",
              memory[name] / memory["enc"], TARGETS["memory"]) for name in memory if name != "enc"]
    for label, value, target in rows:
        print(f"{label:<52}{value:>8.3f}{'<= ' + format(target, '.2f'):>9}  {'MET' if value <= target else 'MISSED'}")
    breakdown(models, inputs, args, {train: statistics.median(times["enc"]) for train, times in results.items()})


if __name__ == "__main__":
    main()
