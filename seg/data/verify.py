"""Checks of a file list before a run relies on it: label values of a sample (or of every pair).

Headers and ends of every file are read when a dataset is built (seg.data.io.image_size); this
decodes images and labels, which costs a second or so per hundred files, so by default only a sample.
"""
from __future__ import annotations

import numpy as np

from .dataset import load_pair
from .labels import CITYSCAPES_DECODER, LabelDecoder

__all__ = ["sample_indices", "check_pairs"]


def sample_indices(n: int, sample: int | None) -> list[int]:
    """`sample` indices spread evenly over range(n), first and last included (all when sample is None)."""
    if sample is None or sample >= n:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, sample)})


def check_pairs(pairs: list[tuple[str, str]], sample: int | None = None,
                decoder: LabelDecoder = CITYSCAPES_DECODER) -> int:
    """Decode a sample of (image, label) pairs (all with sample=None) and check sizes and label values;
    DataError names the first bad file. Labels decode with ``decoder`` (a dataset's ``.decoder``; default
    Cityscapes trainIds). Returns the number checked."""
    chosen = sample_indices(len(pairs), sample)
    for i in chosen:
        load_pair(*pairs[i], decoder)
    return len(chosen)
