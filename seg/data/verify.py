"""Checks of a file list before a run relies on it: each pair's label decoded with the dataset's decoder
(which checks its values) and checked against the model's class count, and its image decoded with
seg.data.io's reader unless only labels are asked for.

A dataset reads every file's header and end when it is built (seg.data.io.image_size, via check_sizes);
decoding costs more, an image most (a 2048x1024 PNG: ~40 ms, its label ~8 ms, on one core), so training
decodes a sample of its training pairs and every validation label (see check_pairs).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np

from .dataset import load_pair
from .io import DataError
from .labels import CITYSCAPES_DECODER, LabelDecoder

__all__ = ["sample_indices", "check_pairs", "label_range_error"]


def sample_indices(n: int, sample: int | None) -> list[int]:
    """`sample` indices spread evenly over range(n), first and last included (all when sample is None)."""
    if sample is None or sample >= n:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, sample)})


def label_range_error(where: str, seen: list[int], num_classes: int, ignore_index: int) -> DataError:
    """The error for target values `seen` (at `where`) that are neither a class of ``model.num_classes`` nor
    the ignore index."""
    return DataError(f"{where}: label values {seen or '(on another rank)'} are outside 0..{num_classes - 1} of "
                     f"model.num_classes={num_classes} and are not train.ignore_index={ignore_index}; set "
                     "model.num_classes to the dataset's number of classes")


def check_pairs(pairs: list[tuple[str, str]], sample: int | None = None,
                decoder: LabelDecoder = CITYSCAPES_DECODER, num_classes: int | None = None,
                ignore_index: int = 255, threads: int = 1, decode_images: bool = True) -> int:
    """Decode a sample of (image, label) pairs (all with sample=None) and check sizes and label values;
    DataError names the first bad file (in list order). Labels decode with ``decoder`` (a dataset's
    ``.decoder``; default Cityscapes trainIds); with `num_classes`, a decoded value that is neither below it nor
    `ignore_index` is an error too. decode_images=False decodes the labels alone (the dataset read each image's
    header and end, and compared the sizes, when it was built). `threads` decode in parallel (the decoders
    release the GIL). Returns the number checked."""
    chosen = [pairs[i] for i in sample_indices(len(pairs), sample)]
    check = partial(_check_pair, decoder=decoder, num_classes=num_classes, ignore_index=ignore_index,
                    decode_images=decode_images)
    pool = ThreadPoolExecutor(max(1, threads))
    try:
        for _ in pool.map(check, chosen):  # results in list order: the first bad file's error comes first
            pass
    finally:  # after an error, the files not yet started are not decoded
        pool.shutdown(cancel_futures=True)
    return len(chosen)


def _check_pair(pair: tuple[str, str], decoder: LabelDecoder, num_classes: int | None, ignore_index: int,
                decode_images: bool) -> None:
    label = load_pair(*pair, decoder)[1] if decode_images else decoder(pair[1])
    if num_classes is not None:
        bad = label[(label != ignore_index) & (label >= num_classes)]
        if bad.size:
            raise label_range_error(pair[1], np.unique(bad)[:5].tolist(), num_classes, ignore_index)
