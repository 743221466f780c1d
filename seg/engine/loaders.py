"""Evaluation loaders: every rank gets a distinct, unpadded share of a split.

``torch.utils.data.DistributedSampler`` pads the split with repeats so that every rank gets the same
number of samples; summed statistics (confusion matrices, accuracy counts) would then count up to W-1
samples twice. :class:`ShardSampler` never pads: rank r gets samples r, r+W, r+2W, ... so every sample is
counted exactly once after an ``all_reduce``.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .distributed import current_dist
from .sampler import dataset_len

__all__ = ["ShardSampler", "build_eval_loader"]


class ShardSampler(Sampler[int]):
    """Sequential shard of a dataset for rank ``rank`` of ``world_size``: indices rank, rank+W, ...
    Unlike DistributedSampler it never pads, so summed statistics count each sample once."""

    def __init__(self, dataset: Dataset, rank: int | None = None, world_size: int | None = None) -> None:
        info = current_dist()
        self.rank = info.rank if rank is None else rank
        self.world_size = info.world_size if world_size is None else world_size
        self.length = dataset_len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


def build_eval_loader(dataset: Dataset, batch_size: int = 1, num_workers: int = 0) -> DataLoader:
    """Sequential loader over ``dataset``, sharded across ranks with :class:`ShardSampler` under torchrun.

    With batch_size 1 samples are not collated (no stacking copy of a full-size image); consumers add the
    batch dimension themselves.
    """
    return DataLoader(dataset, batch_size=None if batch_size == 1 else batch_size, sampler=ShardSampler(dataset),
                      num_workers=num_workers, pin_memory=torch.cuda.is_available(), persistent_workers=False)
