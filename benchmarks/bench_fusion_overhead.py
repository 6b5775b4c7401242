"""Fusion overhead: MERForSequenceClassification vs its two bare encoders, full-size shapes, random init.

Setup (issue 2, "Performance"): `MERConfig()` defaults (roberta-base + wav2vec2-base shapes), batch 4 of 5 s of
16 kHz audio + 32 tokens, no padding. Variants, all sharing the same encoder weights:

  enc      text encoder `model.mer.text_encoder.model(...)` + `model.mer.speech_encoder(input_values, mask)`
           (the speech encoder the way MERModel calls it: masked first group norm, frame mask)
  enc_raw  text encoder + the raw wav2vec2 `model.mer.speech_encoder.model(input_values, attention_mask=mask)`
  mer_off  MERForSequenceClassification with `use_prosody_branch=False`
  mer_on   MERForSequenceClassification with the prosody branch (the default)

Forward: eval mode under `torch.no_grad()`. Forward+backward: train mode (dropout, LayerDrop and SpecAugment
on, the same seed for every variant of a round, so they draw the same masks), MER backpropagates its joint
loss (CE + triplet), the encoders the mean of their outputs. Measurements are interleaved (one call per
variant per round, the order rotated each round) after warm-up rounds; ratios are medians of the per-round
ratios. Targets: MER / (text + speech encoder) <= 1.10 with the prosody branch, <= 1.03 without, for the
forward and for forward+backward; peak memory of the forward <= 1.15x the encoders'.

Peak memory: on CPU each variant runs in a fresh subprocess that builds the model, warms up, resets the
kernel's peak-RSS counter (`/proc/self/clear_refs`, falling back to `ru_maxrss`) and reads the peak RSS
(VmHWM) of one more forward; "growth" is that peak minus the RSS just before the forward. On CUDA it is
`torch.cuda.max_memory_allocated` around the forward.

The breakdown says where the overhead goes: each piece of the prosody branch (STFT/log-mel/MFCC, log-mel CNN,
MFCC BiLSTM, guided attention + projections + norm) and of the fusion (input projections + positions, the
two crossmodal transformers, the two self-attention layers, pooling + embedding + head + loss), timed in place
during the forward and, for forward+backward, run alone on the inputs captured from a real forward. The
whole fusion is also timed in place with the encoders skipped (`text_encoder_states`/`audio_encoder_states`).

Run from the repository root (about 5 minutes on 2 CPU cores):
    python benchmarks/bench_fusion_overhead.py
    python benchmarks/bench_fusion_overhead.py --device cuda --dtype bfloat16 --repeats 20 --train-repeats 20
"""

import argparse
import contextlib
import gc
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modeling_mer import MERConfig, MERForSequenceClassification  # noqa: E402

SAMPLING_RATE = 16_000
VARIANTS = ("enc", "enc_raw", "mer_off", "mer_on")
TRAIN_VARIANTS = ("enc", "mer_off", "mer_on")
LABELS = {
    "enc": "text enc + speech enc (as MERModel calls it)",
    "enc_raw": "text enc + raw wav2vec2 (attention_mask)",
    "mer_off": "MER, prosody branch off",
    "mer_on": "MER, prosody branch on",
}
TARGETS = (("mer_on", 1.10), ("mer_off", 1.03))
MEMORY_TARGET = 1.15


# ----------------------------------------------------------------------------------------------- setup


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                        help="compute dtype; bf16/fp16 run under torch.autocast with fp32 weights")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: available cores)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up rounds (not measured)")
    parser.add_argument("--repeats", type=int, default=5, help="measured forward rounds")
    parser.add_argument("--train-repeats", type=int, default=3, help="measured forward+backward rounds")
    parser.add_argument("--breakdown-repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-breakdown", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--memory-child", choices=VARIANTS, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def set_threads(args):
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    return threads


def seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)  # wav2vec2's SpecAugment masks come from numpy
    torch.manual_seed(seed)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(args, device):
    if args.dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=getattr(torch, args.dtype))


def build_models(args, device, variants):
    """The prosody-on model (and the prosody-off one when needed), sharing one set of encoder weights."""
    if tuple(variants) == ("mer_off",):  # memory child: only the model it measures
        seed_all(args.seed)
        return {"off": MERForSequenceClassification(MERConfig(use_prosody_branch=False)).to(device)}
    seed_all(args.seed)
    models = {"on": MERForSequenceClassification(MERConfig(use_prosody_branch=True)).to(device)}
    if "mer_off" in variants:
        seed_all(args.seed)
        off = MERForSequenceClassification(MERConfig(use_prosody_branch=False))
        # Same encoder modules in every variant: identical weights, and one copy in memory.
        off.mer.text_encoder.model = models["on"].mer.text_encoder.model
        off.mer.speech_encoder.model = models["on"].mer.speech_encoder.model
        models["off"] = off.to(device)
    return models


def make_inputs(args, device, num_labels):
    generator = torch.Generator().manual_seed(args.seed)
    batch, samples = args.batch_size, int(args.seconds * SAMPLING_RATE)
    input_ids = torch.randint(3, 1000, (batch, args.tokens), generator=generator)  # avoid <pad>=1
    input_values = 0.1 * torch.randn(batch, samples, generator=generator)
    inputs = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "input_values": input_values,
        "audio_attention_mask": torch.ones_like(input_values, dtype=torch.long),
        "labels": torch.arange(batch) // 2 % num_labels,  # pairs, so the triplet loss has positives
    }
    return {key: value.to(device) for key, value in inputs.items()}


def variant_fn(name, models):
    """fn(inputs, train) -> logits (eval) or the scalar to backpropagate (train)."""
    if name.startswith("mer"):
        model = models["on" if name == "mer_on" else "off"]

        def run_mer(inputs, train):
            output = model(inputs["input_ids"], inputs["attention_mask"], inputs["input_values"],
                           inputs["audio_attention_mask"], labels=inputs["labels"] if train else None)
            return output.loss if train else output.logits

        return run_mer

    mer = models["on"].mer
    text_model, speech = mer.text_encoder.model, mer.speech_encoder
    raw = name == "enc_raw"

    def run_encoders(inputs, train):
        text = text_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                          return_dict=True).last_hidden_state
        if raw:
            frames = speech.model(inputs["input_values"], attention_mask=inputs["audio_attention_mask"],
                                  return_dict=True).last_hidden_state
        else:
            frames, _ = speech(inputs["input_values"], inputs["audio_attention_mask"])
        return text.float().mean() + frames.float().mean() if train else (text, frames)

    return run_encoders


def set_mode(models, train):
    for model in models.values():
        model.train(train)
        if train:
            model.zero_grad(set_to_none=True)


def timed_call(fn, inputs, train, models, args, device, seed):
    set_mode(models, train)
    gc.collect()
    seed_all(seed)
    synchronize(device)
    start = time.perf_counter()
    with torch.set_grad_enabled(train), autocast(args, device):
        result = fn(inputs, train)
    if train:
        result.backward()
    synchronize(device)
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------- timing


def interleaved(variants, models, inputs, args, device, train):
    """{variant: [seconds per measured round]}; one call per variant per round, order rotated each round."""
    fns = {name: variant_fn(name, models) for name in variants}
    repeats = args.train_repeats if train else args.repeats
    times = {name: [] for name in variants}
    for round_index in range(args.warmup + repeats):
        shift = round_index % len(variants)
        this_round = {}
        for name in variants[shift:] + variants[:shift]:
            this_round[name] = timed_call(fns[name], inputs, train, models, args, device, args.seed + round_index)
            if round_index >= args.warmup:
                times[name].append(this_round[name])
        kind = "warm-up" if round_index < args.warmup else "round"
        print(f"  {'train' if train else 'eval'} {kind} {round_index + 1}/{args.warmup + repeats}: "
              + "  ".join(f"{name} {this_round[name]:.3f}s" for name in variants), flush=True)
    set_mode(models, False)
    return times


def ratios(times, baseline):
    """Median over rounds of time[variant] / time[baseline] in the same round."""
    return {name: statistics.median(a / b for a, b in zip(values, times[baseline], strict=True))
            for name, values in times.items()}


# ---------------------------------------------------------------------------------------------- memory


def _rss_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def memory_child(args):
    """Print one JSON line: peak memory of one eval forward of `args.memory_child` in this fresh process."""
    device = torch.device(args.device)
    set_threads(args)
    models = build_models(args, device, (args.memory_child,))
    inputs = make_inputs(args, device, next(iter(models.values())).config.num_labels)
    fn = variant_fn(args.memory_child, models)
    set_mode(models, False)
    for _ in range(2):
        with torch.no_grad(), autocast(args, device):
            fn(inputs, False)
    gc.collect()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        with torch.no_grad(), autocast(args, device):
            fn(inputs, False)
        synchronize(device)
        peak, method = torch.cuda.max_memory_allocated(device), "cuda max_memory_allocated"
    else:
        try:
            with open("/proc/self/clear_refs", "w") as clear_refs:
                clear_refs.write("5")  # resets VmHWM to the current RSS
            method = "VmHWM after clear_refs"
        except OSError:
            method = "ru_maxrss (peak since start: a lower bound on the growth)"
        before = _rss_kib("VmRSS") * 1024
        with torch.no_grad(), autocast(args, device):
            fn(inputs, False)
        if method.startswith("VmHWM"):
            peak = _rss_kib("VmHWM") * 1024
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"before": before, "peak": peak, "growth": max(peak - before, 0), "method": method}))


def measure_memory(args):
    results = {}
    for name in VARIANTS:
        command = [sys.executable, str(Path(__file__).resolve()), "--memory-child", name, "--device", args.device,
                   "--dtype", args.dtype, "--batch-size", str(args.batch_size), "--seconds", str(args.seconds),
                   "--tokens", str(args.tokens), "--seed", str(args.seed)]
        if args.threads:
            command += ["--threads", str(args.threads)]
        # A fixed mmap threshold turns off glibc's dynamic one, so freed tensors go back to the OS and the RSS
        # follows the live memory instead of keeping the warm-up's freed pages.
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
        if done.returncode:
            print(f"  memory child {name} failed:\n{done.stderr[-2000:]}")
            continue
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"  memory {name}: growth {results[name]['growth'] / 2**20:.0f} MiB, "
              f"peak {results[name]['peak'] / 2**20:.0f} MiB", flush=True)
    return results


# ------------------------------------------------------------------------------------------- breakdown


class Pieces:
    """Wraps methods of the prosody-on model in place to time them and capture their inputs."""

    def __init__(self, model, device):
        mer = model.mer
        prosody = mer.speech_encoder.prosody
        self.device = device
        guided = [(getattr(prosody, name), "forward") for name in
                  ("query_projection", "key_projection", "guided_attention", "output_projection", "output_norm")]
        # name -> the (owner, method) pairs whose calls it sums
        self.targets = {
            "text encoder": [(mer.text_encoder, "forward")],
            "speech encoder (wav2vec2)": [(mer.speech_encoder.model, "forward")],
            "prosody: whole branch": [(prosody, "forward")],
            "prosody: STFT + log-mel + MFCC": [(prosody.spectral, "forward")],
            "prosody: log-mel CNN": [(prosody, "encode_spectrogram")],
            "prosody: MFCC BiLSTM": [(prosody, "encode_mfcc")],
            "prosody: guided attention + proj + norm": guided,
            "fusion: projections + positions": [(mer, "_embed")],
            "fusion: crossmodal text->audio": [(mer.text_to_audio, "forward")],
            "fusion: crossmodal audio->text": [(mer.audio_to_text, "forward")],
            "fusion: text self-attention": [(mer.text_self_attention, "forward")],
            "fusion: audio self-attention": [(mer.audio_self_attention, "forward")],
        }
        self.times = {name: 0.0 for name in self.targets}
        self.originals = {(name, index): getattr(owner, attr) for name, pairs in self.targets.items()
                          for index, (owner, attr) in enumerate(pairs)}
        self.captured = {}  # name -> [(original function, args, kwargs)]
        self.capture = False

    def __enter__(self):
        for name, pairs in self.targets.items():
            for index, (owner, attr) in enumerate(pairs):
                setattr(owner, attr, self._wrap(name, self.originals[name, index]))
        return self

    def __exit__(self, *exc):
        for pairs in self.targets.values():
            for owner, attr in pairs:
                delattr(owner, attr)  # back to the class's method

    def reset(self):
        self.times = {name: 0.0 for name in self.targets}

    def _wrap(self, name, function):
        def wrapper(*args, **kwargs):
            if self.capture:
                self.captured.setdefault(name, []).append((function, _detached(args), _detached(kwargs)))
            synchronize(self.device)
            start = time.perf_counter()
            result = function(*args, **kwargs)
            synchronize(self.device)
            self.times[name] += time.perf_counter() - start
            return result

        return wrapper


def _detached(value):
    if isinstance(value, torch.Tensor):
        return value.detach().clone().requires_grad_(value.requires_grad)
    if isinstance(value, (tuple, list)):
        return type(value)(_detached(item) for item in value)
    if isinstance(value, dict):
        return {key: _detached(item) for key, item in value.items()}
    return value


def _grad_outputs(value):
    if isinstance(value, torch.Tensor):
        return [value] if value.requires_grad else []
    if isinstance(value, (tuple, list)):
        return [tensor for item in value for tensor in _grad_outputs(item)]
    if hasattr(value, "data") and isinstance(getattr(value, "data", None), torch.Tensor):  # PackedSequence
        return _grad_outputs(value.data)
    return []


def add_rest(times, total):
    """Adds what no piece covers (input checks, pooling, embedding, head); `total` = the whole MER call."""
    covered = [name for name in times if name == "prosody: whole branch" or not name.startswith("prosody")]
    times["fusion: checks, pooling, embedding, head"] = total - sum(times[name] for name in covered)
    return times


def breakdown(models, inputs, args, device):
    """Per-piece seconds: in-place forward (eval) and isolated forward+backward (train), medians."""
    model = models["on"]
    results = {"forward": {}, "forward+backward": {}, "fusion only": {}}
    mer_fn = variant_fn("mer_on", models)
    with Pieces(model, device) as pieces:
        samples = []
        for repeat in range(args.breakdown_repeats + 1):
            pieces.reset()
            total = timed_call(mer_fn, inputs, False, models, args, device, args.seed + repeat)
            if repeat:
                samples.append(add_rest(dict(pieces.times), total) | {"MER total": total})
        results["forward"] = {name: statistics.median(s[name] for s in samples) for name in samples[0]}

        if not args.skip_train:
            # Capture each piece's inputs from one real train-mode forward, then run each piece alone.
            set_mode(models, True)
            pieces.capture = True
            seed_all(args.seed)
            with autocast(args, device):
                model(inputs["input_ids"], inputs["attention_mask"], inputs["input_values"],
                      inputs["audio_attention_mask"], labels=inputs["labels"])
            pieces.capture = False
            set_mode(models, False)
            captured = {name: calls for name, calls in pieces.captured.items()
                        if name not in ("text encoder", "speech encoder (wav2vec2)")}
    if args.skip_train:
        return results

    model.train()
    samples = []
    for repeat in range(args.breakdown_repeats + 1):
        times = {}
        for name, calls in captured.items():
            model.zero_grad(set_to_none=True)
            seed_all(args.seed + repeat)
            synchronize(device)
            start = time.perf_counter()
            for function, call_args, call_kwargs in calls:
                with autocast(args, device):
                    outputs = _grad_outputs(function(*call_args, **call_kwargs))
                if outputs:
                    torch.autograd.backward([output.float().sum() for output in outputs])
            synchronize(device)
            times[name] = time.perf_counter() - start
        if repeat:
            samples.append(times)
    model.eval()
    results["forward+backward"] = {name: statistics.median(s[name] for s in samples) for name in samples[0]}

    # The whole fusion (+ prosody) in place with the encoders skipped: their outputs are fed as leaves.
    with torch.no_grad():
        text_states = model.mer.text_encoder(inputs["input_ids"], inputs["attention_mask"])
        frames, _ = model.mer.speech_encoder(inputs["input_values"], inputs["audio_attention_mask"])
    for train in (False, True):
        for key, name in (("off", "mer_off"), ("on", "mer_on")):
            if key not in models:
                continue
            chosen = models[key]

            def run(inputs, train, chosen=chosen):
                output = chosen(inputs["input_ids"], inputs["attention_mask"], inputs["input_values"],
                                inputs["audio_attention_mask"], labels=inputs["labels"] if train else None,
                                text_encoder_states=text_states.clone().requires_grad_(train),
                                audio_encoder_states=frames.clone().requires_grad_(train))
                return output.loss if train else output.logits

            values = [timed_call(run, inputs, train, models, args, device, args.seed + repeat)
                      for repeat in range(args.breakdown_repeats + 1)][1:]
            results["fusion only"][f"{name} {'fwd+bwd' if train else 'fwd'}"] = statistics.median(values)
    set_mode(models, False)
    return results


# ---------------------------------------------------------------------------------------------- report


def verdict(value, target):
    return "MET" if value <= target else "MISSED"


def print_report(args, threads, device, forward, train, memory, pieces):
    batch = args.batch_size
    print(f"\n== Fusion overhead: batch {batch} x {args.seconds:g} s audio + {args.tokens} tokens, {device} "
          f"{args.dtype}, {threads} threads, median of {args.repeats} fwd / {args.train_repeats} fwd+bwd rounds ==")
    header = f"{'variant':<46}{'fwd s':>9}{'utt/s':>8}"
    if train:
        header += f"{'fwd+bwd s':>11}{'utt/s':>8}"
    print(header)
    for name in VARIANTS:
        seconds = statistics.median(forward[name])
        line = f"{LABELS[name]:<46}{seconds:>9.3f}{batch / seconds:>8.2f}"
        if train and name in train:
            seconds = statistics.median(train[name])
            line += f"{seconds:>11.3f}{batch / seconds:>8.2f}"
        print(line)

    print(f"\n{'ratio (median of per-round ratios)':<46}{'value':>8}{'target':>9}  verdict")
    rows = []
    for baseline in ("enc", "enc_raw"):
        fwd_ratios = ratios(forward, baseline)
        for name, target in TARGETS:
            rows.append((f"fwd      {name} / {baseline}", fwd_ratios[name], target))
    if train:
        train_ratios = ratios(train, "enc")
        for name, target in TARGETS:
            rows.append((f"fwd+bwd  {name} / enc", train_ratios[name], target))
    if memory and "enc" in memory:
        for name in ("mer_off", "mer_on"):
            if name in memory:
                rows.append((f"mem growth {name} / enc", memory[name]["growth"] / max(memory["enc"]["growth"], 1),
                             MEMORY_TARGET))
                rows.append((f"mem peak   {name} / enc", memory[name]["peak"] / memory["enc"]["peak"],
                             MEMORY_TARGET))
    for label, value, target in rows:
        print(f"{label:<46}{value:>8.3f}{'<= ' + format(target, '.2f'):>9}  {verdict(value, target)}")
    if memory:
        method = next(iter(memory.values()))["method"]
        print(f"memory ({method}): " + ", ".join(
            f"{name} growth {m['growth'] / 2**20:.0f} MiB / peak {m['peak'] / 2**20:.0f} MiB"
            for name, m in memory.items()))

    if pieces:
        enc_fwd = statistics.median(forward["enc"])
        enc_train = statistics.median(train["enc"]) if train else None
        print("\n== Where the time goes (ms; % of the two encoders' time) ==")
        print(f"{'piece':<50}{'fwd in place':>14}{'%enc':>7}{'fwd+bwd alone':>15}{'%enc':>7}")
        for name, seconds in pieces["forward"].items():
            line = f"{name:<50}{seconds * 1e3:>14.1f}{100 * seconds / enc_fwd:>6.1f}%"
            if name in pieces["forward+backward"]:
                value = pieces["forward+backward"][name]
                line += f"{value * 1e3:>15.1f}{100 * value / enc_train:>6.1f}%"
            print(line)
        if pieces["fusion only"]:
            print("whole MER with the encoders skipped (their outputs fed in): " + ", ".join(
                f"{name} {seconds * 1e3:.1f} ms ({100 * seconds / (enc_train if 'bwd' in name else enc_fwd):.1f}% enc)"
                for name, seconds in pieces["fusion only"].items()))
        overhead = {name: seconds for name, seconds in pieces["forward"].items()
                    if name.startswith(("prosody", "fusion")) and name != "prosody: whole branch"}
        worst = max(overhead, key=overhead.get)
        print(f"largest forward overhead piece: {worst} ({overhead[worst] * 1e3:.1f} ms)")
        if pieces["forward+backward"]:
            overhead = {name: seconds for name, seconds in pieces["forward+backward"].items()
                        if name != "prosody: whole branch"}
            worst = max(overhead, key=overhead.get)
            print(f"largest forward+backward overhead piece: {worst} ({overhead[worst] * 1e3:.1f} ms)")


def main(argv=None):
    args = parse_args(argv)
    if args.memory_child:
        memory_child(args)
        return
    device = torch.device(args.device)
    threads = set_threads(args)
    started = time.perf_counter()
    print(f"torch {torch.__version__}, {threads} threads, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""), flush=True)
    models = build_models(args, device, VARIANTS)
    inputs = make_inputs(args, device, models["on"].config.num_labels)
    print("forward (eval, no_grad):", flush=True)
    forward = interleaved(VARIANTS, models, inputs, args, device, train=False)
    train = None
    if not args.skip_train:
        print("forward+backward (train):", flush=True)
        train = interleaved(TRAIN_VARIANTS, models, inputs, args, device, train=True)
    pieces = None
    if not args.skip_breakdown:
        print("breakdown...", flush=True)
        pieces = breakdown(models, inputs, args, device)
    memory = None
    if not args.skip_memory:
        del models
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print("peak memory (one subprocess per variant):", flush=True)
        memory = measure_memory(args)
    print_report(args, threads, device, forward, train, memory, pieces)
    print(f"\ntotal wall time {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"forward": forward, "train": train, "memory": memory, "pieces": pieces,
                                         "args": {k: str(v) for k, v in vars(args).items()}}, indent=1))


if __name__ == "__main__":
    main()
