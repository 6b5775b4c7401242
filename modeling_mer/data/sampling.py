"""Batch orders for training: class-balanced batches (triplet mining) and length-grouped batches.

Both are plain index samplers over a list of labels or lengths, seeded and epoch-settable: call
`set_epoch(epoch)` before each epoch (accelerate and the Trainer do for samplers that have it) and
every process of a distributed run draws the same order. Without `set_epoch`, each new iteration
advances the epoch by one, so consecutive epochs still differ.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class _EpochSeeded:
    def __init__(self, seed: int):
        self.seed = int(seed)
        self.epoch = 0
        self._epoch_set = False

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._epoch_set = True

    def _next_rng(self) -> np.random.Generator:
        rng = np.random.default_rng([self.seed, self.epoch])
        if not self._epoch_set:
            self.epoch += 1
        self._epoch_set = False
        return rng


class ClassBalancedBatchSampler(_EpochSeeded, Sampler[list[int]]):
    """Batches of `classes_per_batch` (P) classes x `examples_per_class` (K) examples each.

    Every batch then holds K-1 positives per anchor and (P-1)K negatives, which triplet mining needs.
    Per batch, P distinct classes are drawn uniformly (so rare classes are over-sampled compared with
    their frequency: the point of balancing); each class hands out its examples in a fresh shuffled order
    and reshuffles when exhausted, so all examples are seen about equally often. A class with fewer
    than K examples repeats some within a batch. An epoch has `num_batches` batches (default:
    len(labels) // (P * K), i.e. about one pass over the data).
    """

    def __init__(self, labels: Sequence[int], classes_per_batch: int, examples_per_class: int,
                 num_batches: int | None = None, seed: int = 0, extra_examples: int = 0):
        _EpochSeeded.__init__(self, seed)
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) == 0:
            raise ValueError("labels must be a non-empty 1-D sequence of class ids.")
        self.classes = np.unique(labels)
        if not 2 <= classes_per_batch <= len(self.classes):
            raise ValueError(f"classes_per_batch must be between 2 (triplets need a negative) and the "
                             f"{len(self.classes)} classes present, got {classes_per_batch}.")
        if examples_per_class < 2:
            raise ValueError(f"examples_per_class must be >= 2 (triplets need a positive), got {examples_per_class}.")
        self.indices_by_class = {c: np.flatnonzero(labels == c) for c in self.classes}
        self.classes_per_batch = classes_per_batch
        self.examples_per_class = examples_per_class
        self.batch_size = classes_per_batch * examples_per_class + extra_examples
        # The first `extra_examples` classes drawn for a batch give one example more, so that any batch
        # size can be filled exactly (16 with 7 classes: 2 classes x 3 + 5 classes x 2).
        self.extra_examples = extra_examples
        if not 0 <= extra_examples < classes_per_batch:
            raise ValueError(f"extra_examples must be in [0, classes_per_batch={classes_per_batch}), got {extra_examples}.")
        self.num_batches = num_batches if num_batches is not None else max(1, len(labels) // self.batch_size)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = self._next_rng()
        queues = {c: list(rng.permutation(idx)) for c, idx in self.indices_by_class.items()}
        for _ in range(self.num_batches):
            batch = []
            chosen = rng.choice(self.classes, size=self.classes_per_batch, replace=False)
            for rank, c in enumerate(chosen):
                count = self.examples_per_class + (rank < self.extra_examples)
                pool = self.indices_by_class[c]
                if len(pool) < count:
                    # Too few examples for K distinct ones: all of them, then repeats.
                    picked = list(pool) + list(rng.choice(pool, count - len(pool)))
                else:
                    if len(queues[c]) < count:
                        leftover = set(queues[c])
                        queues[c] += [i for i in rng.permutation(pool) if i not in leftover]
                    picked, queues[c] = queues[c][:count], queues[c][count:]
                batch.extend(int(i) for i in picked)
            yield batch


class ClassBalancedSampler(ClassBalancedBatchSampler):
    """The same batches flattened to indices, for the Trainer's own DataLoader (a sampler plus a batch
    size): consecutive `batch_size` indices form one class-balanced batch. P = min(classes, batch_size // 2)
    classes per batch, the batch size filled exactly (see `extra_examples`)."""

    def __init__(self, labels: Sequence[int], batch_size: int, num_batches: int | None = None, seed: int = 0):
        num_classes = len(np.unique(np.asarray(labels)))
        classes_per_batch = min(num_classes, batch_size // 2)
        if classes_per_batch < 2:
            raise ValueError(f"Class-balanced batches of {batch_size} need >= 2 classes and >= 4 examples per batch; "
                             f"got {num_classes} classes. Use a larger batch or --triplet_weight 0.")
        per_class, extra = divmod(batch_size, classes_per_batch)
        super().__init__(labels, classes_per_batch, per_class, num_batches, seed, extra_examples=extra)

    def __len__(self) -> int:
        return self.num_batches * self.batch_size

    def __iter__(self) -> Iterator[int]:
        for batch in super().__iter__():
            yield from batch


def length_grouped_batches(lengths: Sequence[float], batch_size: int, rng: np.random.Generator,
                           mega_batch_factor: int = 50, drop_last: bool = False) -> list[list[int]]:
    """Random mega-batches of `mega_batch_factor * batch_size` items, each sorted by length and cut
    into batches; batch order is then shuffled. Similar lengths share a batch (little padding) while
    the order stays random across mega-batches (the scheme of transformers' LengthGroupedSampler).
    """
    lengths = np.asarray(lengths, dtype=np.float64)
    order = rng.permutation(len(lengths))
    mega = batch_size * max(1, mega_batch_factor)
    batches = []
    for start in range(0, len(order), mega):
        chunk = order[start:start + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]  # longest first within the chunk
        batches.extend(chunk[i:i + batch_size].tolist() for i in range(0, len(chunk), batch_size))
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches = [b for b in batches if len(b) == batch_size]
    rng.shuffle(batches)
    return batches


class LengthGroupedBatchSampler(_EpochSeeded, Sampler[list[int]]):
    """Batches of similar-length items (`lengths`: e.g. the dataset's `duration` column) for DataLoader(batch_sampler=...)."""

    def __init__(self, lengths: Sequence[float], batch_size: int, mega_batch_factor: int = 50,
                 drop_last: bool = False, seed: int = 0):
        _EpochSeeded.__init__(self, seed)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.lengths = np.asarray(lengths, dtype=np.float64)
        if self.lengths.ndim != 1 or len(self.lengths) == 0:
            raise ValueError("lengths must be a non-empty 1-D sequence.")
        self.batch_size, self.mega_batch_factor, self.drop_last = batch_size, mega_batch_factor, drop_last

    def __len__(self) -> int:
        # Mega-batches are whole multiples of batch_size, so only the very last batch can be short.
        full, rest = divmod(len(self.lengths), self.batch_size)
        return full if self.drop_last or not rest else full + 1

    def __iter__(self) -> Iterator[list[int]]:
        yield from length_grouped_batches(self.lengths, self.batch_size, self._next_rng(),
                                          self.mega_batch_factor, self.drop_last)


class LengthGroupedSampler(_EpochSeeded, Sampler[int]):
    """The same order flattened to indices, for code that takes a sampler plus a batch size
    (e.g. a Trainer's `_get_train_sampler`): consecutive `batch_size` indices form a grouped batch."""

    def __init__(self, lengths: Sequence[float], batch_size: int, mega_batch_factor: int = 50, seed: int = 0):
        _EpochSeeded.__init__(self, seed)
        self.lengths = np.asarray(lengths, dtype=np.float64)
        if self.lengths.ndim != 1 or len(self.lengths) == 0:
            raise ValueError("lengths must be a non-empty 1-D sequence.")
        self.batch_size, self.mega_batch_factor = batch_size, mega_batch_factor

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        batches = length_grouped_batches(self.lengths, self.batch_size, self._next_rng(), self.mega_batch_factor)
        # A short batch in the middle would shift every later batch boundary: keep it last.
        batches.sort(key=lambda b: len(b) < self.batch_size)
        for batch in batches:
            yield from batch
