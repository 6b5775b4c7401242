"""Where the focus attention looks: per-layer, per-direction statistics of its centres and widths, and a
TrainerCallback that logs them on a held-out batch at every evaluation.

The numbers, all in fractions of the other sequence's valid length L_k so that utterances of any length
compare, each averaged over heads and utterances:
    centre_spread   std over one utterance's valid queries of mu_i / L_k: 0 when every query looks at the
                    same place (the paper's form stays at ~0.005), 0.29 for centres spread evenly over L_k
    centre_mean     mean of mu_i / L_k (0.5 at the paper's initialisation)
    width           mean of sig_i / L_k
    spearman        Spearman correlation between query index and centre: +1 when the centres follow the order
                    of the queries (tokens read the audio left to right)
"""

import logging

import numpy as np
import torch
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

# (output field prefix, query mask field, key mask field): text_to_audio has audio-frame queries over text tokens.
DIRECTIONS = {
    "text_to_audio": ("audio_frame_mask", "text_mask"),
    "audio_to_text": ("text_mask", "audio_frame_mask"),
}
STATISTICS = ("centre_spread", "centre_mean", "width", "spearman")


def _ranks(values):
    """Average ranks of a 1-D array (ties share their mean rank), the base of Spearman's correlation."""
    _, group, counts = np.unique(values, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # rank of each distinct value's first occurrence
    return (first + (counts - 1) / 2)[group]


def spearman(x, y):
    """Spearman's rank correlation of two 1-D arrays; 0 when either is constant (no order to follow)."""
    rx, ry = _ranks(np.asarray(x, dtype=np.float64)), _ranks(np.asarray(y, dtype=np.float64))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / denominator) if denominator > 0 else 0.0


def focus_statistics(output):
    """{direction: [per layer {statistic: value}]} from a model output made with `output_attentions=True`.

    `output` is a MERModelOutput or MERSequenceClassifierOutput of a text + audio model with focus attention
    and `focus_source="query"` (with "key" the centres index the queries; the same numbers then describe keys).
    """
    statistics = {}
    for direction, (query_mask_field, key_mask_field) in DIRECTIONS.items():
        centres_per_layer = getattr(output, f"{direction}_focus_centres", None)
        if not centres_per_layer or centres_per_layer[0] is None:
            continue
        widths_per_layer = getattr(output, f"{direction}_focus_widths")
        query_mask, key_mask = getattr(output, query_mask_field), getattr(output, key_mask_field)
        source_mask, target_mask = query_mask, key_mask
        if centres_per_layer[0].shape[-1] != query_mask.shape[-1]:  # focus_source="key"
            source_mask, target_mask = key_mask, query_mask
        target_length = target_mask.sum(-1).float().clamp(min=1)[:, None, None].cpu()  # (B, 1, 1)
        layers = []
        for centres, widths in zip(centres_per_layer, widths_per_layer, strict=True):
            centres = (centres.detach().float().cpu() / target_length).numpy()  # (B, H, T_s)
            widths = (widths.detach().float().cpu() / target_length).numpy()
            values = {name: [] for name in STATISTICS}
            for example, valid in enumerate(source_mask.cpu().numpy().astype(bool)):
                if valid.sum() < 2:
                    continue  # one query has no spread and no order
                for head in range(centres.shape[1]):
                    mu = centres[example, head, valid]
                    values["centre_spread"].append(mu.std())
                    values["centre_mean"].append(mu.mean())
                    values["width"].append(widths[example, head, valid].mean())
                    values["spearman"].append(spearman(np.arange(len(mu)), mu))
            layers.append({name: float(np.mean(v)) if v else float("nan") for name, v in values.items()})
        statistics[direction] = layers
    return statistics


def flatten_statistics(statistics, prefix="focus"):
    """{'focus/audio_to_text/layer_0/centre_spread': 0.21, ...} for a log line or a JSON file."""
    return {f"{prefix}/{direction}/layer_{index}/{name}": round(value, 4)
            for direction, layers in statistics.items()
            for index, layer in enumerate(layers) for name, value in layer.items()}


class FocusStatsCallback(TrainerCallback):
    """After each evaluation, runs the model on the first evaluation batch with `output_attentions=True` and
    logs the focus statistics per layer and direction (into the trainer's log history, so they also land in
    `trainer_state.json`). A focus that never leaves its initialisation shows as a flat centre_spread."""

    def on_evaluate(self, args, state, control, model=None, eval_dataloader=None, **kwargs):
        config = getattr(model, "config", None)
        if (eval_dataloader is None or config is None or not config.use_focus_attention
                or not (config.uses_text and config.uses_audio)):
            return
        batch = next(iter(eval_dataloader))
        batch = {name: value.to(model.device) if isinstance(value, torch.Tensor) else value
                 for name, value in batch.items() if name != "labels"}
        was_training = model.training
        model.eval()
        with torch.no_grad():
            output = model(**batch, output_attentions=True)
        model.train(was_training)
        statistics = focus_statistics(output)
        record = flatten_statistics(statistics)
        state.log_history.append({**record, "epoch": state.epoch, "step": state.global_step})
        for direction, layers in statistics.items():
            logger.info("focus %s (step %d): %s", direction, state.global_step, "  ".join(
                f"layer {index}: spread {layer['centre_spread']:.3f} width {layer['width']:.3f} "
                f"spearman {layer['spearman']:+.2f}" for index, layer in enumerate(layers)))
