"""Training step of MER vs the plain baseline a user would otherwise write, measured side by side.

Baseline: transformers' Wav2Vec2ForSequenceClassification + RobertaForSequenceClassification (same encoder
sizes as MER's defaults, random init), logits averaged, cross-entropy. MER: MERForSequenceClassification with
its defaults (prosody branch and focus attention on, CE + 0.1 x batch-hard triplet). Both freeze the wav2vec2
CNN, both take an AdamW step on the same batch. Rounds alternate A, B, A, B and the ratio is the median of the
per-round ratios (this machine is shared and noisy). Target: MER step time <= 1.15 x the baseline's.

    python benchmarks/bench_training_step.py [--rounds 5] [--batch-size 4] [--seconds 5]
"""

import argparse
import statistics
import time

import torch
from transformers import (
    RobertaConfig,
    RobertaForSequenceClassification,
    Wav2Vec2Config,
    Wav2Vec2ForSequenceClassification,
)

from modeling_mer import MERConfig, MERForSequenceClassification


def make_batch(batch_size, seconds, tokens, vocab_size):
    generator = torch.Generator().manual_seed(0)
    return {
        "input_ids": torch.randint(5, vocab_size, (batch_size, tokens), generator=generator),
        "attention_mask": torch.ones(batch_size, tokens, dtype=torch.long),
        "input_values": torch.randn(batch_size, int(16_000 * seconds), generator=generator) * 0.1,
        "audio_attention_mask": torch.ones(batch_size, int(16_000 * seconds), dtype=torch.long),
        "labels": torch.arange(batch_size) % 4,
    }


class PlainBaseline(torch.nn.Module):
    """What a user would write without mer: two stock classifiers, logits averaged."""

    def __init__(self):
        super().__init__()
        self.speech = Wav2Vec2ForSequenceClassification(Wav2Vec2Config(num_labels=4))
        self.speech.freeze_feature_encoder()
        self.text = RobertaForSequenceClassification(RobertaConfig(num_labels=4))

    def forward(self, input_ids, attention_mask, input_values, audio_attention_mask, labels):
        logits = (self.text(input_ids=input_ids, attention_mask=attention_mask).logits
                  + self.speech(input_values, attention_mask=audio_attention_mask).logits) / 2
        return torch.nn.functional.cross_entropy(logits, labels)


def step_time(model, optimizer, batch, loss_of):
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss_of(model, batch).backward()
    optimizer.step()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    torch.manual_seed(0)
    mer = MERForSequenceClassification(MERConfig()).train()
    baseline = PlainBaseline().train()
    batch = make_batch(args.batch_size, args.seconds, args.tokens, mer.config.text_config.vocab_size)
    runs = {
        "mer": (mer, torch.optim.AdamW([p for p in mer.parameters() if p.requires_grad], lr=1e-5),
                lambda model, b: model(**b).loss),
        "baseline": (baseline, torch.optim.AdamW([p for p in baseline.parameters() if p.requires_grad], lr=1e-5),
                     lambda model, b: model(**b)),
    }
    for model, optimizer, loss_of in runs.values():  # warm-up (allocator, AdamW state)
        step_time(model, optimizer, batch, loss_of)
    times = {name: [] for name in runs}
    ratios = []
    for round_index in range(args.rounds):
        order = list(runs) if round_index % 2 == 0 else list(reversed(runs))
        for name in order:
            times[name].append(step_time(*runs[name][:2], batch, runs[name][2]))
        ratios.append(times["mer"][-1] / times["baseline"][-1])
        print(f"round {round_index + 1}: mer {times['mer'][-1]:.3f}s  baseline {times['baseline'][-1]:.3f}s")
    ratio = statistics.median(ratios)
    print(f"\nbatch {args.batch_size} x {args.seconds:g} s audio + {args.tokens} tokens, CPU, "
          f"{torch.get_num_threads()} threads, median of {args.rounds} rounds")
    print(f"MER step {statistics.median(times['mer']):.3f} s, baseline step {statistics.median(times['baseline']):.3f} s")
    print(f"MER / baseline step time: {ratio:.3f} (target <= 1.15: {'MET' if ratio <= 1.15 else 'MISSED'})")


if __name__ == "__main__":
    main()
