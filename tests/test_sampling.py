"""Class-balanced and length-grouped samplers."""

from collections import Counter

import numpy as np
import pytest

from modeling_mer.data.sampling import (
    ClassBalancedBatchSampler,
    ClassBalancedSampler,
    LengthGroupedBatchSampler,
    LengthGroupedSampler,
)

# Imbalanced like IEMOCAP 4-class, scaled down: 170 / 160 / 110 / 40 examples.
LABELS = [0] * 170 + [1] * 160 + [2] * 110 + [3] * 40


def test_class_balanced_batches_are_p_by_k():
    sampler = ClassBalancedBatchSampler(LABELS, classes_per_batch=3, examples_per_class=4, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == len(LABELS) // 12
    labels = np.asarray(LABELS)
    for batch in batches:
        counts = Counter(labels[batch].tolist())
        assert len(counts) == 3 and set(counts.values()) == {4}
        assert len(set(batch)) == 12  # no repeats: every class has >= K examples
    # Classes are drawn uniformly, so the rare class is not starved.
    per_class = Counter(labels[i] for b in batches for i in b)
    assert min(per_class.values()) > 0.6 * max(per_class.values())


def test_class_balanced_cycles_through_each_class():
    sampler = ClassBalancedBatchSampler([0] * 8 + [1] * 8, classes_per_batch=2, examples_per_class=4,
                                        num_batches=2, seed=3)
    seen = [i for batch in sampler for i in batch]
    assert sorted(seen) == list(range(16))  # two batches cover every example exactly once


def test_class_balanced_seeding_and_epochs():
    def order(seed, epoch=None):
        sampler = ClassBalancedBatchSampler(LABELS, 2, 4, seed=seed)
        if epoch is not None:
            sampler.set_epoch(epoch)
        return list(sampler)

    assert order(0, 1) == order(0, 1)  # same seed and epoch on every process
    assert order(0, 1) != order(0, 2)
    assert order(0, 1) != order(1, 1)
    sampler = ClassBalancedBatchSampler(LABELS, 2, 4, seed=0)
    assert list(sampler) != list(sampler)  # without set_epoch, each pass advances the epoch


def test_class_balanced_small_class_and_bad_arguments():
    sampler = ClassBalancedBatchSampler([0] * 10 + [1], classes_per_batch=2, examples_per_class=3, seed=0)
    for batch in sampler:
        assert batch.count(10) == 3  # the single example of class 1 fills its K slots
    with pytest.raises(ValueError, match="classes_per_batch"):
        ClassBalancedBatchSampler(LABELS, classes_per_batch=5, examples_per_class=2)
    with pytest.raises(ValueError, match="examples_per_class"):
        ClassBalancedBatchSampler(LABELS, classes_per_batch=2, examples_per_class=1)


def _padding_waste(lengths, batches):
    lengths = np.asarray(lengths)
    padded = sum(len(b) * lengths[b].max() for b in batches)
    return 1 - lengths.sum() / padded


def test_flat_class_balanced_sampler_fills_any_batch_size_exactly():
    """The Trainer cuts the flat order into batch_size chunks: each chunk must be one balanced batch."""
    labels = [c for c in range(7) for _ in range(10)]
    sampler = ClassBalancedSampler(labels, batch_size=16, num_batches=6, seed=3)
    order = list(sampler)
    assert len(order) == len(sampler) == 6 * 16
    for start in range(0, len(order), 16):
        counts = Counter(labels[i] for i in order[start:start + 16])
        # min(7 classes, 16 // 2) = 7 classes; 16 = 7 x 2 + 2 extra: two classes give 3 examples, five give 2.
        assert sorted(counts.values()) == [2, 2, 2, 2, 2, 3, 3], counts
    # Flattening does not change the batches the batch sampler draws.
    batches = list(ClassBalancedBatchSampler(labels, 7, 2, num_batches=6, seed=3, extra_examples=2))
    assert [i for batch in batches for i in batch] == order
    with pytest.raises(ValueError, match="need >= 2 classes"):
        ClassBalancedSampler([0] * 10, batch_size=8)


def test_length_grouped_batches_cover_everything_and_cut_padding():
    rng = np.random.default_rng(0)
    lengths = rng.gamma(2.0, 2.3, size=1003) + 0.6
    sampler = LengthGroupedBatchSampler(lengths, batch_size=8, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 126
    assert sorted(i for b in batches for i in b) == list(range(1003))
    random_batches = [list(range(i, min(i + 8, 1003))) for i in range(0, 1003, 8)]  # data order is random
    assert _padding_waste(lengths, batches) < 0.1 < _padding_waste(lengths, random_batches)
    dropped = LengthGroupedBatchSampler(lengths, batch_size=8, drop_last=True, seed=0)
    assert len(list(dropped)) == len(dropped) == 125
    assert all(len(b) == 8 for b in dropped)


def test_length_grouped_order_is_seeded_and_varies_by_epoch():
    lengths = np.random.default_rng(1).uniform(0.6, 34, size=200)
    a, b = LengthGroupedBatchSampler(lengths, 8, seed=0), LengthGroupedBatchSampler(lengths, 8, seed=0)
    a.set_epoch(4)
    b.set_epoch(4)
    assert list(a) == list(b)
    a.set_epoch(5)
    assert list(a) != list(b)


def test_flat_length_grouped_sampler_keeps_batch_boundaries():
    lengths = np.random.default_rng(2).uniform(0.6, 34, size=101)
    sampler = LengthGroupedSampler(lengths, batch_size=8, seed=0)
    order = list(sampler)
    assert sorted(order) == list(range(101)) and len(sampler) == 101
    sampler.set_epoch(0)
    grouped = LengthGroupedBatchSampler(lengths, 8, seed=0)
    grouped.set_epoch(0)
    # Consecutive chunks of 8 are exactly the grouped batches (the short one moved last).
    chunks = [order[i:i + 8] for i in range(0, 101, 8)]
    assert len(chunks[-1]) == 5
    assert sorted(map(tuple, chunks)) == sorted(map(tuple, grouped))
