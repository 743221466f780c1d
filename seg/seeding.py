"""The one per-item seeding scheme of training: item `index` of epoch `epoch` draws its randomness from
(base seed, epoch, index) alone, so a run resumed at any iteration, with any number of loader workers,
sees the items an uninterrupted run would have seen."""
from __future__ import annotations

import numpy as np

__all__ = ["item_seed"]


def item_seed(base_seed: int, epoch: int, index: int, bits: int = 63) -> int:
    """The low `bits` (at most 64) bits of the first two 32-bit words numpy's SeedSequence draws from
    (base_seed, epoch, index). bits=32 is the first word alone: the range albumentations' and numpy's
    legacy seeding accept."""
    words = np.random.SeedSequence([base_seed, epoch, index]).generate_state(2, np.uint32)
    return (int(words[0]) | int(words[1]) << 32) & ((1 << bits) - 1)
