"""Triplet losses with online mining, and the joint cross-entropy + triplet objective.

Shipped with Hub checkpoints: imports only torch and the config module's constants.

Conventions shared by every function here:
- `embeddings` is (B, D) and `labels` is (B,) of class ids; rows labelled `IGNORE_INDEX` (-100, the
  transformers / `cross_entropy` ignore index) take part in neither loss.
- Distances follow FaceNet (Schroff et al. 2015): squared L2 distance between L2-normalised
  embeddings, so every distance lies in [0, 4] and one margin (`DEFAULT_TRIPLET_MARGIN`, chosen in
  configuration_mer) is meaningful whatever the embedding scale.
- A batch with nothing to mine returns a zero that is still connected to the autograd graph (so
  `.backward()` works and DDP sees the parameters used), never NaN.
"""

import torch
import torch.nn.functional as F

from .configuration_mer import DEFAULT_TRIPLET_MARGIN, TRIPLET_MININGS

IGNORE_INDEX = -100


def _graph_connected_zero(tensor: torch.Tensor) -> torch.Tensor:
    # Summing an empty slice gives an exact 0 tied to `tensor`'s graph; `tensor.sum() * 0` would
    # turn an inf/NaN activation into NaN.
    return tensor[:0].sum()


def _drop_ignored(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    keep = labels != IGNORE_INDEX
    return embeddings[keep], labels[keep]


def _label_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, B) boolean masks: positive[a, p] = same label and p != a; negative[a, n] = other label."""
    same_label = labels[:, None] == labels[None, :]
    is_self = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    return same_label & ~is_self, ~same_label


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # torch.where (not values * mask) so that inf in a masked-out slot cannot become NaN, and the
    # count is clamped so an empty mask gives 0 / 1 = 0 instead of 0 / 0. The result stays tied to
    # `values`' graph even when the mask is empty (or the batch has no rows at all).
    total = torch.where(mask, values, torch.zeros_like(values)).sum()
    return total / mask.sum().clamp(min=1)


def pairwise_distances(
    embeddings: torch.Tensor, squared: bool = True, normalize: bool = True
) -> torch.Tensor:
    """(B, D) -> (B, B) matrix of L2 distances between rows."""
    # Half precision loses the small differences of the expansion below; compute in >= float32.
    embeddings = embeddings.to(torch.promote_types(embeddings.dtype, torch.float32))
    if normalize:
        embeddings = F.normalize(embeddings, p=2, dim=1)
    # ||x_i - x_j||^2 = ||x_i||^2 - 2 <x_i, x_j> + ||x_j||^2, one matmul instead of a (B, B, D) tensor.
    gram = embeddings @ embeddings.T  # (B, B)
    squared_norms = gram.diagonal()
    distances = squared_norms[:, None] - 2.0 * gram + squared_norms[None, :]
    # Rounding can push equal vectors slightly below 0, and the diagonal is 0 by definition.
    distances = distances.clamp(min=0.0)
    is_self = torch.eye(distances.shape[0], dtype=torch.bool, device=distances.device)
    distances = distances.masked_fill(is_self, 0.0)
    if squared:
        return distances
    # d/dx sqrt(x) is infinite at 0 (identical embeddings, the diagonal): take the root of a
    # harmless 1 there and select 0 with torch.where, whose backward sends no gradient to that branch.
    is_zero = distances == 0.0
    safe = torch.where(is_zero, torch.ones_like(distances), distances)
    return torch.where(is_zero, torch.zeros_like(distances), safe.sqrt())


def batch_hard_triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Hermans et al. 2017, "In Defense of the Triplet Loss", batch-hard mining.

    loss = mean_a max(0, max_{p: y_p = y_a, p != a} d(a, p) - min_{n: y_n != y_a} d(a, n) + margin)
    over anchors a that have at least one positive and one negative.
    """
    embeddings, labels = _drop_ignored(embeddings, labels)
    if labels.numel() == 0:  # every label ignored: amax/amin cannot reduce an empty dim
        return _graph_connected_zero(embeddings)
    distances = pairwise_distances(embeddings)  # (B, B)
    positive_mask, negative_mask = _label_masks(labels)
    # Distances are >= 0, so -1 / +inf can never be picked over a real positive / negative.
    hardest_positive = torch.where(positive_mask, distances, -1.0).amax(dim=1)  # (B,)
    hardest_negative = torch.where(negative_mask, distances, float("inf")).amin(dim=1)  # (B,)
    per_anchor = F.relu(hardest_positive - hardest_negative + margin)
    valid_anchor = positive_mask.any(dim=1) & negative_mask.any(dim=1)
    return _masked_mean(per_anchor, valid_anchor)


def batch_all_triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Every valid (a, p, n) triplet of the batch, averaged over the triplets that are not yet satisfied.

    loss = sum_{(a,p,n)} max(0, d(a, p) - d(a, n) + margin) / #{(a,p,n): that term > 0}

    Mean of the non-zero terms, Hermans et al.'s "BA != 0" variant, rather than the mean over all
    valid triplets: as training proceeds most triplets become easy, and averaging their zeros in
    would shrink the gradient of the few informative ones towards nothing (Hermans et al. report
    BA != 0 training better than plain BA).
    """
    embeddings, labels = _drop_ignored(embeddings, labels)
    if labels.numel() == 0:  # every label ignored; same early exit as the other miners
        return _graph_connected_zero(embeddings)
    distances = pairwise_distances(embeddings)  # (B, B)
    positive_mask, negative_mask = _label_masks(labels)
    # (B, B, 1) - (B, 1, B) -> (B, B, B) indexed [anchor, positive, negative]
    triplet_terms = F.relu(distances[:, :, None] - distances[:, None, :] + margin)
    valid_triplet = positive_mask[:, :, None] & negative_mask[:, None, :]
    return _masked_mean(triplet_terms, valid_triplet & (triplet_terms > 0))


def semi_hard_triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """FaceNet online semi-hard mining (Schroff et al. 2015), as in tfa.losses.TripletSemiHardLoss.

    For each anchor-positive pair (a, p): n* = argmin_{n: y_n != y_a, d(a, n) > d(a, p)} d(a, n), the
    closest negative that is still farther than the positive. When no negative is farther than the
    positive, fall back to the negative with the LARGEST d(a, n) (TF-addons' choice: of the negatives
    that are all closer than p, the least violating one, so training never starts from the hardest,
    often mislabelled, negative that FaceNet warns collapses the model).
    loss = mean_{(a,p)} max(0, d(a, p) - d(a, n*) + margin) over pairs whose anchor has a negative.
    Unlike FaceNet there is no upper bound d(a, n) < d(a, p) + margin: a negative beyond it simply
    contributes 0, as in TF-addons.
    """
    embeddings, labels = _drop_ignored(embeddings, labels)
    if labels.numel() == 0:  # every label ignored: amax/amin cannot reduce an empty dim
        return _graph_connected_zero(embeddings)
    distances = pairwise_distances(embeddings)  # (B, B)
    positive_mask, negative_mask = _label_masks(labels)
    anchor_positive = distances[:, :, None]  # (B, B, 1) [anchor, positive, -]
    anchor_negative = distances[:, None, :]  # (B, 1, B) [anchor, -, negative]
    semi_hard = negative_mask[:, None, :] & (anchor_negative > anchor_positive)  # (B, B, B)
    closest_semi_hard = torch.where(semi_hard, anchor_negative, float("inf")).amin(dim=2)  # (B, B)
    farthest_negative = torch.where(negative_mask, distances, -1.0).amax(dim=1, keepdim=True)  # (B, 1)
    chosen_negative = torch.where(semi_hard.any(dim=2), closest_semi_hard, farthest_negative)  # (B, B)
    per_pair = F.relu(distances - chosen_negative + margin)  # (B, B) [anchor, positive]
    valid_pair = positive_mask & negative_mask.any(dim=1, keepdim=True)
    return _masked_mean(per_pair, valid_pair)


_MINING_TO_LOSS = {
    "batch_hard": batch_hard_triplet_loss,
    "batch_all": batch_all_triplet_loss,
    "semi_hard": semi_hard_triplet_loss,
}


def triplet_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    margin: float = DEFAULT_TRIPLET_MARGIN,
    mining: str = "batch_hard",
) -> torch.Tensor:
    if mining not in _MINING_TO_LOSS:
        raise ValueError(f"mining={mining!r} is not supported; choose one of {', '.join(TRIPLET_MININGS)}.")
    return _MINING_TO_LOSS[mining](embeddings, labels, margin)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean (label-smoothed) cross-entropy over the labels that are not IGNORE_INDEX.

    Sum / number of kept labels equals cross_entropy's "mean" (no class weights), but gives 0 instead of NaN
    when every label is IGNORE_INDEX."""
    ce_sum = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum",
                             label_smoothing=label_smoothing)
    return ce_sum / (labels != IGNORE_INDEX).sum().clamp(min=1)


def joint_loss(
    logits: torch.Tensor,
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    triplet_weight: float,
    margin: float = DEFAULT_TRIPLET_MARGIN,
    mining: str = "batch_hard",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """loss = CE(logits, labels) + triplet_weight * triplet(embeddings, labels), the CE smoothed by `label_smoothing`.

    Returns (loss, ce_loss, triplet_loss); the triplet part is returned unweighted so that logs stay
    comparable across values of triplet_weight.
    """
    ce_loss = cross_entropy(logits, labels, label_smoothing)
    if triplet_weight == 0:
        # Skip the O(B^2) (batch_all: O(B^3)) mining when it would be multiplied by 0 anyway.
        metric_loss = _graph_connected_zero(embeddings).to(ce_loss.dtype)
    else:
        metric_loss = triplet_loss(embeddings, labels, margin=margin, mining=mining)
    return ce_loss + triplet_weight * metric_loss, ce_loss, metric_loss
