"""Per-image statistics: what resampling over images (the bootstrap in tools/compare.py) needs.

For every image and every scored region (the whole image, each centre leave-out proportion, each
border-distance band) three per-class pixel counts are kept: intersection (truth c and prediction c),
prediction (prediction c, truth not ignored) and ground truth (truth c). Summed over any multiset of
images they give that multiset's IoUs exactly, ``IoU = I / (P + G - I)``, the formula of
:func:`seg.evaluation.metrics.scores_from_confusion`: summed over all images they are the diagonal, the
column sums and the row sums of the split's confusion matrix.

They travel beside the results JSON as a compact ``.npz`` sidecar (:func:`save_image_stats`).
"""
from __future__ import annotations

import zipfile
from typing import Any

import numpy as np
import torch

from seg.atomic import atomic_open
from seg.errors import MissingFileError, ResultFileError

__all__ = ["COUNTS", "REGION_ALL", "counts_from_confusion", "iou_from_counts", "miou_from_iou",
           "sidecar_path", "save_image_stats", "load_image_stats"]

COUNTS = ("intersection", "prediction", "ground_truth")
REGION_ALL = "all"  # region label of the whole image; others are "leave_out <label>" and "band <label>"
SIDECAR_SUFFIX = ".images.npz"


def counts_from_confusion(confusion: torch.Tensor) -> torch.Tensor:
    """(..., K, K) confusion matrices (rows = truth) -> (..., 3, K) intersection / prediction / truth counts."""
    return torch.stack([confusion.diagonal(dim1=-2, dim2=-1), confusion.sum(-2), confusion.sum(-1)], -2)


def iou_from_counts(intersection: np.ndarray, prediction: np.ndarray, ground_truth: np.ndarray) -> np.ndarray:
    """IoU in percent per class (last axis), NaN where a class is absent from truth and prediction."""
    inter = np.asarray(intersection, np.float64)
    union = np.asarray(prediction, np.float64) + np.asarray(ground_truth, np.float64) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, 100.0 * inter / np.where(union > 0, union, 1.0), np.nan)


def miou_from_iou(iou: np.ndarray) -> np.ndarray:
    """Mean over the defined classes (last axis), NaN where none is defined (as cityscapesscripts)."""
    defined = ~np.isnan(iou)
    total = np.where(defined, iou, 0.0).sum(-1)
    count = defined.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def sidecar_path(results_json: str) -> str:
    """``eval_regular.json`` -> ``eval_regular.images.npz`` (same folder)."""
    stem = results_json[:-5] if results_json.endswith(".json") else results_json
    return stem + SIDECAR_SUFFIX


def save_image_stats(stats: dict, path: str) -> None:
    """Write ``stats`` (``EvaluationResult.image_stats`` of a SegmentationEvaluator with ``image_stats=True``)
    as a compressed .npz, atomically."""
    # values typed Any: numpy >= 2.1 types savez_compressed's **kwds next to its `allow_pickle: bool`, and mypy
    # cannot see that no key here is "allow_pickle" (numpy 1.x has no such flag, so it is not passed)
    arrays: dict[str, Any] = {name: np.asarray(stats[name], np.int64) for name in COUNTS}
    arrays.update(regions=np.asarray(stats["regions"], str), images=np.asarray(stats["images"], str),
                  class_names=np.asarray(stats["class_names"], str))
    with atomic_open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def load_image_stats(path: str) -> dict:
    """Read a sidecar written by :func:`save_image_stats`: counts (N images, R regions, K classes) int64,
    "regions" (R labels), "images" (N names), "class_names" (K). Errors name the file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            stats = {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise MissingFileError(f"per-image statistics not found: {path}") from None
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ResultFileError(f"{path} is not a readable per-image statistics file ({err})") from None
    missing = [name for name in (*COUNTS, "regions", "images") if name not in stats]
    if missing:
        raise ResultFileError(f"{path} lacks {missing}; was it written by tools/eval.py?")
    stats["regions"] = [str(r) for r in stats["regions"]]
    stats["images"] = [str(i) for i in stats["images"]]
    shapes = {stats[name].shape for name in COUNTS}
    if len(shapes) != 1 or stats["intersection"].shape[:2] != (len(stats["images"]), len(stats["regions"])):
        raise ResultFileError(f"{path}: count arrays disagree in shape ({sorted(shapes)})")
    return stats
