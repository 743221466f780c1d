"""Data order and augmentation randomness that can be resumed mid-epoch.

The permutation of epoch `e` is drawn from a generator seeded with (seed, e) alone, and every item's
augmentation from (seed, e, index) alone, so a run resumed at any iteration sees exactly the batches
an uninterrupted run would have seen from that iteration on, whatever the number of workers.

The sampler yields (epoch, index) keys and :class:`EpochSeededDataset` reads the epoch from the key, so
the epoch reaches data-loader workers with every item: workers can persist across epochs (no
re-spawn per epoch, which matters for small datasets) and still see each epoch's crop plan.
"""
from __future__ import annotations

import random
from collections.abc import Sized
from contextlib import contextmanager

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from seg.errors import DataError, UnsupportedError
from seg.seeding import item_seed

__all__ = ["ResumableDistributedSampler", "EpochSeededDataset"]


class ResumableDistributedSampler(Sampler[tuple[int, int]]):
    """Like torch's DistributedSampler (shuffled, rank r takes every world-th index, padded to equal length)
    plus `set_epoch(epoch, start=k)` which skips the first k indices of this rank's share, for resuming.
    Yields (epoch, index) keys for :class:`EpochSeededDataset`.
    """

    def __init__(self, num_samples: int, world_size: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True):
        if num_samples <= 0:
            raise DataError("ResumableDistributedSampler: the dataset is empty")
        self.num_samples, self.world_size, self.rank = num_samples, world_size, rank
        self.seed, self.shuffle = seed, shuffle
        self.per_rank = -(-num_samples // world_size)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        total = self.per_rank * self.world_size
        order += order[: total - len(order)]  # pad so every rank gets the same count
        return order[self.rank:total:self.world_size]

    def __iter__(self):
        return iter([(self.epoch, i) for i in self._indices()[self.start:]])

    def __len__(self) -> int:
        return self.per_rank - self.start


@contextmanager
def _seeded_rngs(seed: int):
    """Seed python, numpy and torch (CPU) for one item, restoring the caller's states afterwards."""
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % (1 << 32))
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def dataset_len(dataset: Dataset) -> int:
    """``len(dataset)``: torch's ``Dataset`` declares no ``__len__``, and seg's loaders and samplers need
    a map-style dataset that has one (TypeError naming the class otherwise)."""
    if not isinstance(dataset, Sized):
        raise UnsupportedError(f"{type(dataset).__name__} has no __len__: seg needs a map-style dataset with a length")
    return len(dataset)


class EpochSeededDataset(Dataset):
    """Wraps a training dataset so that item i of epoch e is drawn with python's, numpy's and torch's RNGs
    seeded from seg.seeding.item_seed(seed, e, i) (a dataset whose transforms have their own generators
    seeds them from the same function: seg.data.SegTrainDataset).

    Indexed by (epoch, index) keys (or a plain index for the current epoch). When the epoch changes, the
    wrapped dataset's `set_epoch(epoch)` (the class-balanced crop plan) is called, in whichever process
    holds this copy.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed
        self.epoch: int | None = None  # set by the sampler's set_epoch before each epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return dataset_len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (self.epoch or 0, key)
        if epoch != self.epoch:
            self.set_epoch(epoch)
        with _seeded_rngs(item_seed(self.seed, epoch, index)):
            return self.dataset[index]
