"""Class-balanced ("class-uniform") crop sampling, as in Mapillary's and NVIDIA's Cityscapes pipelines.

Once per file list, a few pixel locations ("centroids") are drawn for every (image, class) pair and cached
beside the data. Each epoch a fraction of the crops is then centred on a centroid of a class chosen
uniformly among the classes, the image chosen uniformly among the images holding that class.
"""
from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from multiprocessing import get_context

import cv2
import numpy as np

from seg.progress import progress_bar

from .labels import CITYSCAPES_DECODER, LabelDecoder

_CACHE_VERSION = 1
_POOL_MIN_FILES = 64  # below this a process pool costs more than it saves


@dataclass
class Centroids:
    """Flat table of centroids: ``item[i]`` (image index), ``cls[i]`` (trainId), ``xy[i]`` (x, y) pixel."""

    item: np.ndarray  # (M,) int32
    cls: np.ndarray  # (M,) uint8
    xy: np.ndarray  # (M, 2) int32


def image_centroids(label_path: str, per_class: int, decoder: LabelDecoder = CITYSCAPES_DECODER
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``per_class`` pixels for every trainId present in one label image.

    Pixels are drawn from the class's interior (3x3 erosion) when it has one, so that a random
    rescale with nearest-neighbour masks keeps the class at the crop centre. The draw is seeded by
    the file name, so the result does not depend on the order or process that computes it.
    Returns (cls (M,) uint8, xy (M, 2) int32).
    """
    label = decoder(label_path)
    rng = np.random.default_rng(zlib.crc32(os.path.basename(label_path).encode()))
    kernel = np.ones((3, 3), np.uint8)
    classes, xys = [], []
    for c in np.unique(label):
        if c >= decoder.num_classes:
            continue
        mask = (label == c).astype(np.uint8)
        interior = cv2.erode(mask, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        ys, xs = np.nonzero(interior if interior.any() else mask)
        pick = rng.choice(len(xs), size=min(per_class, len(xs)), replace=False)
        classes.append(np.full(len(pick), c, np.uint8))
        xys.append(np.stack([xs[pick], ys[pick]], axis=1).astype(np.int32))
    if not classes:
        return np.zeros(0, np.uint8), np.zeros((0, 2), np.int32)
    return np.concatenate(classes), np.concatenate(xys)


def _centroids_job(args):
    return image_centroids(*args)


def compute_centroids(label_paths: list[str], per_class: int, workers: int | None = None,
                      decoder: LabelDecoder = CITYSCAPES_DECODER) -> Centroids:
    """Centroids of every label image, in parallel with a progress bar for large lists."""
    jobs = [(p, per_class, decoder) for p in label_paths]
    workers = workers or min(os.cpu_count() or 1, 8)
    bar = dict(total=len(jobs), desc="class centroids", unit="img", disable=len(jobs) < _POOL_MIN_FILES)
    if workers > 1 and len(jobs) >= _POOL_MIN_FILES:
        with get_context("spawn").Pool(workers) as pool:
            results = list(progress_bar(pool.imap(_centroids_job, jobs, chunksize=8), **bar))
    else:
        results = [_centroids_job(j) for j in progress_bar(jobs, **bar)]
    item = np.concatenate([np.full(len(c), i, np.int32) for i, (c, _) in enumerate(results)] + [np.zeros(0, np.int32)])
    cls = np.concatenate([c for c, _ in results] + [np.zeros(0, np.uint8)])
    xy = np.concatenate([xy for _, xy in results] + [np.zeros((0, 2), np.int32)])
    return Centroids(item, cls, xy)


def cache_key(root: str, label_paths: list[str], per_class: int, decoder: LabelDecoder = CITYSCAPES_DECODER) -> str:
    """Hash of the file list (paths relative to ``root``, sizes and modification times, so a regenerated
    label invalidates it too), the sampling settings and the label decoding (another mapping of mask
    values gives other classes; Cityscapes trainIds add nothing, so existing Cityscapes caches stay valid)."""
    mapping = "" if decoder.key == CITYSCAPES_DECODER.key else f"|{decoder.key}"
    h = hashlib.sha1(f"v{_CACHE_VERSION}|{per_class}{mapping}".encode())
    for p in label_paths:
        st = os.stat(p)
        h.update(f"\0{os.path.relpath(p, root)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def load_or_compute_centroids(root: str, label_paths: list[str], per_class: int,
                              decoder: LabelDecoder = CITYSCAPES_DECODER) -> Centroids:
    """Centroids cached at ``ROOT/.cache/centroids_<hash of file list>.npz``; a changed list gets a new file.
    Concurrent first runs (DDP ranks) each compute and atomically write the same file."""
    path = os.path.join(root, ".cache", f"centroids_{cache_key(root, label_paths, per_class, decoder)}.npz")
    if os.path.isfile(path):
        try:
            with np.load(path) as z:
                cached = Centroids(z["item"], z["cls"], z["xy"])
            if len(cached.item) == 0 or cached.item.max() < len(label_paths):
                return cached
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # damaged cache: recompute
            warnings.warn(f"ignoring unreadable centroid cache {path}: {e}", stacklevel=2)
    cent = compute_centroids(label_paths, per_class, decoder=decoder)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp.npz"
        np.savez(tmp, item=cent.item, cls=cent.cls, xy=cent.xy)
        os.replace(tmp, path)  # atomic, so concurrent DDP ranks never read a half-written file
    except OSError as e:
        warnings.warn(f"could not cache class centroids at {path}: {e}", stacklevel=2)
    return cent


@dataclass
class CropPlan:
    """One epoch of crops: sample ``i`` reads image ``item[i]``; ``cls[i] >= 0`` centres it on ``xy[i]``."""

    item: np.ndarray  # (N,) int64
    cls: np.ndarray  # (N,) int64, -1 = random crop
    xy: np.ndarray  # (N, 2) int64


@dataclass
class ClassPool:
    """Centroids of one class grouped by image: image ``images[k]`` owns ``entries[starts[k]:starts[k]+counts[k]]``."""

    images: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    entries: np.ndarray  # indices into the Centroids table


def class_pools(cent: Centroids, allowed: np.ndarray, num_classes: int = CITYSCAPES_DECODER.num_classes
                ) -> list[ClassPool]:
    """Per class, the centroids that may be drawn; ``allowed`` (M,) bool masks entries out."""
    pools = []
    for c in range(num_classes):
        entries = np.nonzero((cent.cls == c) & allowed)[0]  # sorted by image: the table is built image by image
        images, starts, counts = np.unique(cent.item[entries], return_index=True, return_counts=True)
        pools.append(ClassPool(images, starts, counts, entries))
    return pools


def draw_plan(num_items: int, cent: Centroids, pools: list[ClassPool], fraction: float,
              rng: np.random.Generator, random_pool: np.ndarray | None = None) -> CropPlan:
    """``round(fraction * num_items)`` class-centred crops (class uniform over the classes that have
    centroids, then image uniform over the images holding it, then centroid uniform), the rest random
    crops of distinct images; the plan is shuffled.

    With ``random_pool`` (image indices) an epoch has ``len(random_pool)`` crops and the random ones
    are drawn from those images only (coarse_mode "boost": the fine images)."""
    if random_pool is not None:
        num_items = len(random_pool)
    classes = np.array([c for c, pool in enumerate(pools) if len(pool.images)], np.int64)
    n_bal = int(round(fraction * num_items)) if len(classes) else 0
    cls = np.full(num_items, -1, np.int64)
    item = np.empty(num_items, np.int64)
    xy = np.zeros((num_items, 2), np.int64)
    cls[:n_bal] = rng.choice(classes, size=n_bal) if n_bal else []
    for k in range(n_bal):
        pool = pools[cls[k]]
        m = rng.integers(len(pool.images))
        j = pool.entries[pool.starts[m] + rng.integers(pool.counts[m])]
        item[k], xy[k] = cent.item[j], cent.xy[j]
    pool = np.arange(num_items) if random_pool is None else np.asarray(random_pool, np.int64)
    item[n_bal:] = rng.permutation(pool)[: num_items - n_bal]
    order = rng.permutation(num_items)
    return CropPlan(item[order], cls[order], xy[order])
