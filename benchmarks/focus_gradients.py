"""Why the paper's focus attention does not move: the gradients that reach it, in the demo setting.

For each form of the focus (the paper's; the paper's centre with a narrow width; the default diagonal prior
with a narrow width) this trains the demo model (MiniLM frozen, small wav2vec2, d_model 64, 2 layers, 4 heads,
AdamW lr 1e-3, batch 16, the same seed and batches) for --steps steps and prints, per parameter group of the
crossmodal attention:

    rel_grad    median over steps of |grad| / |param| (Frobenius norms)
    sign        median over elements of |sum_t g_t| / sum_t |g_t|: 1 = the gradient keeps its sign every step,
                ~ sqrt(2 / (pi * steps)) for a random sign (Adam then only jitters the parameter)
    moved       |param_end - param_start| / |param_start|

and, on a validation batch after training, the focus statistics of modeling_mer.training.focus_stats plus the
bias range (max over keys of |f_ij|, nats) and the attention entropy as a fraction of log(L_k).
Side by side in one run, so the rows compare. About 1-5 s per step on a shared 2-core CPU; run it with
OMP_NUM_THREADS=1 there (beside other jobs, a demo training step took ~30 s with two threads, ~2 s with one):

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/focus_gradients.py --steps 40
"""

import argparse
import math

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers.trainer_utils import set_seed

from modeling_mer.data.collator import MERDataCollator
from modeling_mer.training.arguments import DataArguments, ModelArguments
from modeling_mer.training.experiment import build_model, load_data, make_folds
from modeling_mer.training.focus_stats import focus_statistics

FORMS = {
    "paper (none, 0.5)": dict(focus_centre_prior="none", focus_initial_width=0.5),
    "narrow (none, 0.1)": dict(focus_centre_prior="none", focus_initial_width=0.1),
    "default (diagonal, 0.1)": dict(focus_centre_prior="diagonal", focus_initial_width=0.1),
}
GROUPS = {  # parameter name ending -> group
    "focus_local": "W_q", "focus_global": "W_g", "focus_centre": "u_p", "focus_width": "u_z",
    "focus_diagonal_gain": "a (gain)", "q_proj.weight": "q_proj", "k_proj.weight": "k_proj",
    "v_proj.weight": "v_proj", "out_proj.weight": "out_proj",
}


def crossmodal_parameters(model):
    """{group: [(name, parameter)]} of the two crossmodal transformers."""
    groups = {}
    for name, parameter in model.named_parameters():
        if ".text_to_audio." not in name and ".audio_to_text." not in name:
            continue
        for ending, group in GROUPS.items():
            if name.endswith(ending):
                groups.setdefault(group, []).append((name, parameter))
    return groups


def bias_range_and_entropy(output):
    """Mean over heads/queries of max_j |f_ij| (nats) and of the attention entropy / log(L_k), per direction."""
    result = {}
    for direction, key_mask_name in (("text_to_audio", "text_mask"), ("audio_to_text", "audio_frame_mask")):
        key_mask = getattr(output, key_mask_name)
        length = key_mask.sum(-1).float()[:, None, None]  # (B, 1, 1)
        centres, widths = output[f"{direction}_focus_centres"][0], output[f"{direction}_focus_widths"][0]
        farthest = torch.maximum(centres, length - 1 - centres).clamp(min=0)
        bias_range = (farthest.square() / (widths.square() / 2)).mean().item()
        probabilities = output[f"{direction}_attentions"][0]  # (B, H, T_q, T_k)
        entropy = -(probabilities.clamp(min=1e-12).log() * probabilities).sum(-1)  # (B, H, T_q)
        normalised = (entropy / length.clamp(min=2).log()).mean().item()
        result[direction] = (bias_range, normalised)
    return result


def run(form, steps, seed, batches):
    set_seed(seed)
    model, _ = build_model(ModelArguments(freeze_text_encoder=True, d_model=64, num_crossmodal_layers=2,
                                          num_attention_heads=4, **FORMS[form]), LABELS)
    groups = crossmodal_parameters(model)
    start = {name: p.detach().clone() for members in groups.values() for name, p in members}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.01)
    rel_grads = {group: [] for group in groups}
    sums = {name: torch.zeros_like(p) for members in groups.values() for name, p in members}
    abs_sums = {name: torch.zeros_like(p) for members in groups.values() for name, p in members}
    model.train()
    for step in range(steps):
        batch = batches[step % len(batches)]
        optimizer.zero_grad()
        model(**batch).loss.backward()
        for group, members in groups.items():
            grad = torch.sqrt(sum(p.grad.square().sum() for _, p in members))
            norm = torch.sqrt(sum(p.detach().square().sum() for _, p in members))
            rel_grads[group].append((grad / norm).item())
            for name, p in members:
                sums[name] += p.grad
                abs_sums[name] += p.grad.abs()
        optimizer.step()
    rows = {}
    for group, members in groups.items():
        sign = torch.cat([(sums[n].abs() / abs_sums[n].clamp(min=1e-30)).flatten() for n, _ in members])
        moved = math.sqrt(sum((p.detach() - start[n]).square().sum().item() for n, p in members))
        rows[group] = (float(np.median(rel_grads[group])), sign.median().item(),
                       moved / math.sqrt(sum(start[n].square().sum().item() for n, _ in members)))
    model.eval()
    with torch.no_grad():
        output = model(**VALIDATION, output_attentions=True)
    return rows, focus_statistics(output), bias_range_and_entropy(output)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    global LABELS, VALIDATION
    dataset, LABELS = load_data(DataArguments())
    splits = next(iter(make_folds(dataset, DataArguments()).values()))
    _, processor = build_model(ModelArguments(freeze_text_encoder=True, d_model=64, num_crossmodal_layers=2,
                                              num_attention_heads=4), LABELS)
    collator = MERDataCollator(processor, max_audio_seconds=15.0, training=True, seed=args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(splits["train"], batch_size=16, shuffle=True, collate_fn=collator, generator=generator)
    batches = [batch for batch, _ in zip(loader, range(args.steps), strict=False)]  # the same batches per form
    VALIDATION = {k: v for k, v in MERDataCollator(processor, max_audio_seconds=15.0)(
        [splits["validation"][i] for i in range(16)]).items() if k != "labels"}

    print(f"{args.steps} steps, batch 16, AdamW lr 1e-3; sign of a random-sign gradient ~ "
          f"{math.sqrt(2 / (math.pi * args.steps)):.2f}")
    for form in FORMS:
        rows, statistics, ranges = run(form, args.steps, args.seed, batches)
        print(f"\n== {form}")
        print(f"{'group':10s} {'rel_grad':>9s} {'sign':>6s} {'moved':>7s}")
        for group, (rel_grad, sign, moved) in rows.items():
            print(f"{group:10s} {rel_grad:9.2e} {sign:6.2f} {moved:7.3f}")
        for direction, layers in statistics.items():
            bias_range, entropy = ranges[direction]
            print(f"{direction}: layer-0 bias range {bias_range:.1f} nats, attention entropy {entropy:.2f} of uniform; "
                  + "  ".join(f"layer {i} spread {s['centre_spread']:.3f} mean {s['centre_mean']:.2f} "
                              f"width {s['width']:.3f} spearman {s['spearman']:+.2f}" for i, s in enumerate(layers)))


if __name__ == "__main__":
    main()
