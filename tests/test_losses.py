"""Triplet mining and joint loss checked against hand computations.

The reference functions below loop explicitly over every (anchor, positive, negative) triplet in plain
Python floats, so they share no code (and no vectorisation trick) with modeling_mer/losses_mer.py.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from modeling_mer.configuration_mer import TRIPLET_MININGS
from modeling_mer.losses_mer import (
    batch_all_triplet_loss,
    batch_hard_triplet_loss,
    joint_loss,
    pairwise_distances,
    semi_hard_triplet_loss,
    triplet_loss,
)

IGNORE = -100
MINING_FUNCTIONS = {
    "batch_hard": batch_hard_triplet_loss,
    "batch_all": batch_all_triplet_loss,
    "semi_hard": semi_hard_triplet_loss,
}

# --- hand references -------------------------------------------------------------------------------


def hand_distance(u, v, squared=True, normalize=True):
    if normalize:
        u = [x / math.sqrt(sum(y * y for y in u)) for x in u]
        v = [x / math.sqrt(sum(y * y for y in v)) for x in v]
    squared_distance = sum((x - y) ** 2 for x, y in zip(u, v, strict=True))
    return squared_distance if squared else math.sqrt(squared_distance)


def hand_setup(embeddings, labels):
    kept = [i for i, y in enumerate(labels.tolist()) if y != IGNORE]
    vectors = embeddings.detach().double().tolist()
    ys = labels.tolist()

    def dist(i, j):
        return hand_distance(vectors[i], vectors[j])

    def positives(a):
        return [p for p in kept if p != a and ys[p] == ys[a]]

    def negatives(a):
        return [n for n in kept if ys[n] != ys[a]]

    return kept, dist, positives, negatives


def hand_batch_hard(embeddings, labels, margin):
    kept, dist, positives, negatives = hand_setup(embeddings, labels)
    per_anchor = []
    for a in kept:
        if not positives(a) or not negatives(a):
            continue
        hardest_positive = max(dist(a, p) for p in positives(a))
        hardest_negative = min(dist(a, n) for n in negatives(a))
        per_anchor.append(max(0.0, hardest_positive - hardest_negative + margin))
    return sum(per_anchor) / len(per_anchor) if per_anchor else 0.0


def hand_batch_all_terms(embeddings, labels, margin):
    kept, dist, positives, negatives = hand_setup(embeddings, labels)
    return [
        max(0.0, dist(a, p) - dist(a, n) + margin) for a in kept for p in positives(a) for n in negatives(a)
    ]


def hand_batch_all(embeddings, labels, margin):
    active = [t for t in hand_batch_all_terms(embeddings, labels, margin) if t > 0]
    return sum(active) / len(active) if active else 0.0


def hand_semi_hard(embeddings, labels, margin, branch_counts=None):
    kept, dist, positives, negatives = hand_setup(embeddings, labels)
    per_pair = []
    for a in kept:
        for p in positives(a):
            if not negatives(a):
                continue
            farther = [n for n in negatives(a) if dist(a, n) > dist(a, p)]
            if farther:
                chosen = min(farther, key=lambda n: dist(a, n))
                branch = "semi_hard"
            else:
                chosen = max(negatives(a), key=lambda n: dist(a, n))
                branch = "fallback"
            if branch_counts is not None:
                branch_counts[branch] = branch_counts.get(branch, 0) + 1
            per_pair.append(max(0.0, dist(a, p) - dist(a, chosen) + margin))
    return sum(per_pair) / len(per_pair) if per_pair else 0.0


HAND_LOSSES = {"batch_hard": hand_batch_hard, "batch_all": hand_batch_all, "semi_hard": hand_semi_hard}

# --- batches ---------------------------------------------------------------------------------------

# Six directions (angles in degrees), two per class. All pairwise angle gaps differ, so no
# d(a, p) == d(a, n) tie leaves the semi-hard choice to rounding. With margin 0.8 the batch has easy
# and violating triplets, and semi-hard mining meets both its branches (asserted below).
CIRCLE_ANGLES = (0.0, 37.0, 16.0, 103.0, 178.0, 62.0)
CIRCLE_LABELS = (0, 0, 1, 1, 2, 2)
CIRCLE_MARGIN = 0.8


def circle_batch():
    radians = torch.tensor(CIRCLE_ANGLES, dtype=torch.float64).deg2rad()
    # Radii differ so that normalisation matters: without it the distances would be different.
    radii = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5, 1.0], dtype=torch.float64)
    embeddings = torch.stack([radii * radians.cos(), radii * radians.sin()], dim=1)
    return embeddings, torch.tensor(CIRCLE_LABELS)


def random_batch(seed=0, batch_size=12, dim=4, num_classes=3):
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(batch_size, dim, generator=generator, dtype=torch.float64)
    labels = torch.arange(batch_size) % num_classes
    # The last example is alone in its class: an anchor without a positive, which batch-hard must
    # leave out of its mean (it would otherwise add a 0 term and shrink the loss).
    labels[-1] = num_classes
    return embeddings, labels


BATCHES = {"circle": (circle_batch, CIRCLE_MARGIN), "random": (random_batch, 0.5)}

# --- pairwise distances ----------------------------------------------------------------------------


@pytest.mark.parametrize("squared", [True, False])
@pytest.mark.parametrize("normalize", [True, False])
def test_pairwise_distances_match_hand_loops(squared, normalize):
    embeddings, _ = random_batch(batch_size=5, dim=3)
    embeddings = torch.cat([embeddings, embeddings[:1] * 2.0])  # a scaled duplicate of row 0
    distances = pairwise_distances(embeddings, squared=squared, normalize=normalize)
    vectors = embeddings.tolist()
    expected = [[hand_distance(u, v, squared, normalize) for v in vectors] for u in vectors]
    torch.testing.assert_close(distances, torch.tensor(expected, dtype=distances.dtype), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("normalize", [True, False])
def test_unsquared_distance_gradient_is_finite_at_zero(normalize):
    # Row 2 repeats row 0, so d(0, 2) = 0 off the diagonal as well as on it.
    embeddings = torch.tensor([[1.0, 2.0], [0.5, -1.0], [1.0, 2.0]], requires_grad=True)
    distances = pairwise_distances(embeddings, squared=False, normalize=normalize)
    assert distances[0, 2] == 0 and distances[0, 1] > 0
    distances.sum().backward()
    assert torch.isfinite(embeddings.grad).all()
    assert embeddings.grad.abs().sum() > 0


def test_half_precision_embeddings_are_compared_in_float32():
    embeddings, _ = random_batch(batch_size=4)
    distances = pairwise_distances(embeddings.to(torch.bfloat16))
    assert distances.dtype == torch.float32


# --- mining against hand loops ---------------------------------------------------------------------


def test_circle_batch_exercises_every_branch():
    # Guards the fixture: if these fail, the comparisons below would no longer test what they claim.
    embeddings, labels = circle_batch()
    branch_counts = {}
    hand_semi_hard(embeddings, labels, CIRCLE_MARGIN, branch_counts)
    assert branch_counts.get("semi_hard", 0) > 0 and branch_counts.get("fallback", 0) > 0
    terms = hand_batch_all_terms(embeddings, labels, CIRCLE_MARGIN)
    assert 0 < sum(t > 0 for t in terms) < len(terms)  # mean of non-zero != mean of all
    assert hand_batch_hard(embeddings, labels, CIRCLE_MARGIN) > 0


@pytest.mark.parametrize("batch_name", sorted(BATCHES))
@pytest.mark.parametrize("mining", TRIPLET_MININGS)
def test_mining_matches_hand_computation(mining, batch_name):
    make_batch, margin = BATCHES[batch_name]
    embeddings, labels = make_batch()
    expected = HAND_LOSSES[mining](embeddings, labels, margin)
    assert expected > 0
    loss_from_function = MINING_FUNCTIONS[mining](embeddings, labels, margin)
    loss_from_dispatch = triplet_loss(embeddings, labels, margin=margin, mining=mining)
    assert loss_from_function.dim() == 0
    assert loss_from_function.item() == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert loss_from_dispatch.item() == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_mining_modes_differ_on_the_circle_batch():
    # The dispatch must route each name to its own miner, not one function for all.
    embeddings, labels = circle_batch()
    values = {m: triplet_loss(embeddings, labels, CIRCLE_MARGIN, m).item() for m in TRIPLET_MININGS}
    assert len({round(v, 6) for v in values.values()}) == len(TRIPLET_MININGS), values


def test_semi_hard_negative_must_be_strictly_farther_than_the_positive():
    # Exact ties: for every anchor the positive and one negative are both at squared distance 2,
    # the other negative at 4. FaceNet's d(a, p) < d(a, n) excludes the tied negative, so each pair
    # mines the one at 4 and max(0, 2 - 4 + 0.5) = 0; a ">=" test would give 0.5.
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    assert hand_semi_hard(embeddings, labels, 0.5) == 0.0
    assert semi_hard_triplet_loss(embeddings, labels, 0.5).item() == 0.0


# --- degenerate batches ----------------------------------------------------------------------------


@pytest.mark.parametrize("mining", TRIPLET_MININGS)
def test_single_class_batch_gives_exact_zero_and_finite_grads(mining):
    embeddings, _ = random_batch(batch_size=6)
    embeddings.requires_grad_(True)
    loss = triplet_loss(embeddings, torch.zeros(6, dtype=torch.long), margin=0.5, mining=mining)
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert torch.isfinite(embeddings.grad).all()


@pytest.mark.parametrize("mining", TRIPLET_MININGS)
def test_one_example_per_class_gives_exact_zero_and_finite_grads(mining):
    embeddings, _ = random_batch(batch_size=5)
    embeddings.requires_grad_(True)
    loss = triplet_loss(embeddings, torch.arange(5), margin=0.5, mining=mining)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(embeddings.grad).all()


@pytest.mark.parametrize("mining", TRIPLET_MININGS)
def test_duplicate_embeddings_give_finite_loss_and_grads(mining):
    # Collapsed embeddings (all equal, the state a bad run falls into) have every distance 0.
    embeddings = torch.ones(6, 3, requires_grad=True)
    loss = triplet_loss(embeddings, torch.tensor([0, 0, 1, 1, 2, 2]), margin=0.2, mining=mining)
    assert loss.item() == pytest.approx(0.2)
    loss.backward()
    assert torch.isfinite(embeddings.grad).all()


# --- gradients -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mining", TRIPLET_MININGS)
def test_gradient_flows_to_embeddings(mining):
    embeddings, labels = circle_batch()
    embeddings.requires_grad_(True)
    loss = triplet_loss(embeddings, labels, margin=CIRCLE_MARGIN, mining=mining)
    assert loss.item() > 0
    loss.backward()
    assert embeddings.grad.abs().sum() > 0


@pytest.mark.parametrize("mining", TRIPLET_MININGS)
def test_gradient_matches_finite_differences(mining):
    # Random float64 points sit away from the kinks of max/min/relu, where the loss is smooth.
    embeddings, labels = random_batch(seed=3, batch_size=8, dim=3)
    embeddings.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda e: triplet_loss(e, labels, margin=0.5, mining=mining), (embeddings,)
    )


# --- ignore index ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mining", TRIPLET_MININGS)
def test_ignored_labels_take_no_part_in_the_triplet_loss(mining):
    embeddings, labels = circle_batch()
    # Ignored rows are placed to be the hardest positive/negative of everyone if they counted.
    intruders = embeddings[:2].clone() + 0.01
    padded_embeddings = torch.cat([embeddings, intruders]).requires_grad_(True)
    padded_labels = torch.cat([labels, torch.tensor([IGNORE, IGNORE])])
    loss = triplet_loss(padded_embeddings, padded_labels, margin=CIRCLE_MARGIN, mining=mining)
    expected = triplet_loss(embeddings, labels, margin=CIRCLE_MARGIN, mining=mining)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-9)
    # And with -100 read as a real class, the loss would change (so this test can fail).
    as_class = triplet_loss(
        padded_embeddings, padded_labels.clamp(min=0), margin=CIRCLE_MARGIN, mining=mining
    )
    assert as_class.item() != pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert padded_embeddings.grad[-2:].abs().sum() == 0


# --- joint loss ------------------------------------------------------------------------------------


def logits_for(labels, num_classes=3, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(labels.shape[0], num_classes, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("mining", TRIPLET_MININGS)
def test_joint_loss_is_cross_entropy_plus_weighted_triplet(mining):
    embeddings, labels = circle_batch()
    logits = logits_for(labels)
    weight = 0.3
    loss, ce_loss, metric_loss = joint_loss(logits, embeddings, labels, weight, CIRCLE_MARGIN, mining)
    expected_ce = F.cross_entropy(logits, labels)
    expected_triplet = HAND_LOSSES[mining](embeddings, labels, CIRCLE_MARGIN)
    assert ce_loss.item() == pytest.approx(expected_ce.item(), rel=1e-9)
    assert metric_loss.item() == pytest.approx(expected_triplet, rel=1e-6)
    assert loss.item() == pytest.approx(expected_ce.item() + weight * expected_triplet, rel=1e-6)


def test_joint_loss_ignores_minus_100_in_both_parts():
    embeddings, labels = circle_batch()
    labels = labels.clone()
    labels[[1, 4]] = IGNORE
    logits = logits_for(labels)
    loss, ce_loss, metric_loss = joint_loss(logits, embeddings, labels, 0.5, CIRCLE_MARGIN, "batch_all")
    assert ce_loss.item() == pytest.approx(
        F.cross_entropy(logits, labels, ignore_index=IGNORE).item(), rel=1e-9
    )
    expected_triplet = hand_batch_all(embeddings, labels, CIRCLE_MARGIN)
    assert expected_triplet > 0
    assert metric_loss.item() == pytest.approx(expected_triplet, rel=1e-6)


@pytest.mark.parametrize("mining", TRIPLET_MININGS)
def test_joint_loss_with_every_label_ignored_is_zero_not_nan(mining):
    embeddings, _ = circle_batch()
    embeddings.requires_grad_(True)
    labels = torch.full((6,), IGNORE)
    logits = logits_for(labels).requires_grad_(True)
    loss, ce_loss, metric_loss = joint_loss(logits, embeddings, labels, 1.0, 0.2, mining)
    assert loss.item() == 0.0 and ce_loss.item() == 0.0 and metric_loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all() and torch.isfinite(embeddings.grad).all()


def test_zero_triplet_weight_skips_the_triplet_loss(monkeypatch):
    import modeling_mer.losses_mer as losses_mer

    def must_not_run(*args, **kwargs):
        raise AssertionError("triplet loss computed although triplet_weight == 0")

    monkeypatch.setattr(losses_mer, "triplet_loss", must_not_run)
    embeddings, labels = circle_batch()
    embeddings.requires_grad_(True)
    logits = logits_for(labels)
    loss, ce_loss, metric_loss = losses_mer.joint_loss(
        logits, embeddings, labels, 0.0, CIRCLE_MARGIN, "batch_hard"
    )
    assert metric_loss.item() == 0.0 and metric_loss.requires_grad
    assert loss.item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-12)
    loss.backward()  # the zero triplet part is tied to the embeddings' graph


# --- errors ----------------------------------------------------------------------------------------


def test_unknown_mining_raises_naming_value_and_choices():
    embeddings, labels = circle_batch()
    with pytest.raises(ValueError) as error:
        triplet_loss(embeddings, labels, margin=0.2, mining="hardest")
    message = str(error.value)
    assert "'hardest'" in message
    assert all(name in message for name in TRIPLET_MININGS)
    with pytest.raises(ValueError, match="hardest"):
        joint_loss(logits_for(labels), embeddings, labels, 1.0, 0.2, "hardest")
