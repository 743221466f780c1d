"""Confusion-matrix metrics and the spatial masks used for border analysis.

Everything here works on integer label maps on any device; the confusion matrices of a batch are built
with one scatter-add into a buffer of fixed size, so a whole evaluation never leaves the accelerator (no
host sync) until the final reduction.

Conventions (shared with :mod:`seg.evaluation.evaluator`):

* ``confusion[t, p]`` counts pixels whose ground truth is ``t`` and prediction ``p`` (rows = truth),
  the layout of cityscapesscripts' ``confMatrix``.
* IoU of class ``c`` is ``TP / (TP + FP + FN)``; a class absent from both truth and prediction has an
  undefined IoU (NaN) and is left out of the mean, exactly as ``getScoreAverage`` in cityscapesscripts.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist

from seg.config import LEAVE_OUT_BY
from seg.data.io import DataError
from seg.engine.distributed import current_dist
from seg.errors import InputError

__all__ = [
    "confusion_matrix",
    "count_pixels",
    "region_stride",
    "ConfusionAccumulator",
    "scores_from_confusion",
    "centre_leave_out_size",
    "centre_leave_out_mask",
    "border_distance",
    "distance_band_index",
    "LEAVE_OUT_MEANING",
    "leave_out_readings",
    "LEAVE_OUT_ROUNDING",
]

LEAVE_OUT_MEANING = {
    "side": "proportion p blanks (sets to ignore) a centred rectangle of round(p*H) x round(p*W) pixels; "
            "only the ring around it is scored",
    "area": "proportion p blanks a centred rectangle with the image's aspect ratio covering a fraction p of "
            "the image area (each side scaled by sqrt(p)): round(sqrt(p)*H) x round(sqrt(p)*W) pixels",
}


def leave_out_readings(leave_out_by: str) -> tuple[str, ...]:
    """The readings scored for an ``eval.leave_out_by`` value: ("side",), ("area",) or both, side first."""
    if leave_out_by not in LEAVE_OUT_BY:
        raise InputError(f"leave_out_by must be one of {list(LEAVE_OUT_BY)}, got {leave_out_by!r}")
    return tuple(LEAVE_OUT_MEANING) if leave_out_by == "both" else (leave_out_by,)


LEAVE_OUT_ROUNDING = ("round half up: h = floor(f*H + 0.5), w = floor(f*W + 0.5) with f = p (side) or sqrt(p) (area); "
                      "the blanked rows are [(H-h)//2, (H-h)//2 + h), columns [(W-w)//2, (W-w)//2 + w)")


def _truth_rows(num_classes: int, ignore_index: int, device: torch.device) -> torch.Tensor:
    """Lookup id -> confusion row: class c -> c, ``ignore_index`` -> K, any other id -> K + 1. Its last
    entry is an "other" one, so ids clamped to [-1, len - 1] need no further check (-1 wraps to it)."""
    size = max(num_classes, ignore_index + 1) + 1
    rows = torch.full((size,), num_classes + 1, dtype=torch.long, device=device)
    rows[:num_classes] = torch.arange(num_classes, device=device)
    rows[ignore_index] = num_classes
    return rows


def count_pixels(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255,
                 region_offset: torch.Tensor | None = None, num_regions: int = 1,
                 rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image, per-region confusion matrices of a batch and its count of invalid target pixels, from
    one scatter-add into a buffer of fixed size: no host sync (``torch.bincount`` sizes its output from
    the largest index, which reads it back to the host on a GPU).

    Args:
        pred: (N, ...) predicted class ids in [0, num_classes) (not checked).
        target: (N, ...) ground truth; ``ignore_index`` (>= 0) pixels are skipped, any other id outside
            [0, num_classes) is counted as invalid (and in no matrix).
        region_offset: ``region * (num_classes + 2) * num_classes`` per pixel, broadcastable to ``pred``'s
            trailing shape (see :func:`region_stride`), region ids in [0, num_regions); None = one region.
        rows: :func:`_truth_rows` of (num_classes, ignore_index) on the target's device, if cached.
    Returns:
        (int64 (N, num_regions, K, K) matrices, rows = truth; int64 (N,) invalid target pixels per image).
    """
    if pred.shape != target.shape:
        raise InputError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    if ignore_index < 0:
        raise InputError(f"ignore_index must be >= 0, got {ignore_index}")
    k, n = num_classes, target.shape[0]
    if rows is None:
        rows = _truth_rows(k, ignore_index, target.device)
    block = num_regions * region_stride(k)  # bins per image
    index = rows[target.long().clamp(-1, rows.numel() - 1)].mul_(k).add_(pred)
    if region_offset is not None:
        index += region_offset
    index += torch.arange(0, n * block, block, device=index.device).view(-1, *[1] * (index.dim() - 1))
    counts = torch.zeros(n * block, dtype=torch.long, device=index.device)
    counts.index_add_(0, index.reshape(-1), torch.ones(1, dtype=torch.long, device=index.device).expand(index.numel()))
    counts = counts.view(n, num_regions, k + 2, k)
    return counts[:, :, :k], counts[:, :, k + 1].sum((1, 2))


def region_stride(num_classes: int) -> int:
    """Bins per region in :func:`count_pixels`: K truth rows, an ignore row and an invalid row, of K each."""
    return (num_classes + 2) * num_classes


def _invalid_target_error(target: torch.Tensor, num_classes: int, ignore_index: int, where: str = "target"
                          ) -> DataError:
    valid = (target >= 0) & (target < num_classes) | (target == ignore_index)
    bad = target[~valid]
    return DataError(f"{where} holds ids outside [0, {num_classes}) of model.num_classes={num_classes} other than "
                     f"ignore_index={ignore_index}: {bad.numel()} pixels, min {int(bad.min())}, max {int(bad.max())}")


def _check_pred(pred: torch.Tensor, num_classes: int) -> None:
    """ValueError when a predicted id lies outside [0, num_classes) (reads min and max: a host sync)."""
    if pred.numel():
        p_min, p_max = (int(v) for v in pred.aminmax())
        if p_min < 0 or p_max >= num_classes:
            raise InputError(f"prediction holds ids outside [0, {num_classes}): min {p_min}, max {p_max}")


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255,
                     region: torch.Tensor | None = None, num_regions: int = 1, check_pred: bool = True
                     ) -> torch.Tensor:
    """Confusion matrix of integer label maps, on their device, checked (one host sync; a pass over a
    split uses :class:`ConfusionAccumulator`, which reads nothing back until the end).

    Args:
        pred: predicted class ids, any shape, values in [0, num_classes) (checked unless ``check_pred``
            is False, e.g. for an argmax over num_classes channels).
        target: ground-truth ids, same shape; ``ignore_index`` (>= 0) pixels are skipped, any other id
            outside [0, num_classes) is a DataError.
        region: optional region id per pixel (same shape or broadcastable), values in [0, num_regions):
            one confusion matrix per region is built by the same single scatter-add.
    Returns:
        int64 tensor (num_classes, num_classes), or (num_regions, num_classes, num_classes) when
        ``region`` is given; rows index the ground truth.
    """
    if pred.shape != target.shape:
        raise InputError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    k = num_classes
    if check_pred:
        _check_pred(pred, k)
    offset = None if region is None else (region.long() * region_stride(k)).expand(pred.shape)[None]
    counts, invalid = count_pixels(pred[None], target[None], k, ignore_index, offset, num_regions)
    if int(invalid[0]):
        raise _invalid_target_error(target, k, ignore_index)
    return counts[0, 0] if region is None else counts[0]


def scores_from_confusion(confusion: torch.Tensor) -> dict:
    """Per-class IoU and accuracy, their means, frequency-weighted IoU and pixel accuracy from a (K, K)
    confusion matrix (rows = truth).

    Returns percentages (0-100) as Python floats: ``{"IoU": [K floats, NaN when undefined], "mIoU": float
    (NaN when no class is defined), "Acc": [K floats, TP / truth pixels, NaN for classes absent from the
    truth], "mAcc": mean of the defined Acc, "fwIoU": sum over classes of (truth pixels of the class / all
    pixels) * IoU, "pixel_acc": float, "pixels": int}``.
    """
    cm = confusion.detach().to("cpu", torch.float64)
    tp = cm.diagonal()
    truth = cm.sum(1)
    denom = cm.sum(0) + truth - tp
    nan = torch.full_like(tp, float("nan"))
    iou = torch.where(denom > 0, tp / denom.clamp(min=1), nan)
    acc = torch.where(truth > 0, tp / truth.clamp(min=1), nan)
    total = float(cm.sum())
    # a class present in the truth always has a defined IoU, so the weights only meet defined values
    fwiou = float((truth * iou.nan_to_num()).sum() / total) if total > 0 else float("nan")
    return {"IoU": [100.0 * float(v) for v in iou], "mIoU": 100.0 * _nanmean(iou),
            "Acc": [100.0 * float(v) for v in acc], "mAcc": 100.0 * _nanmean(acc), "fwIoU": 100.0 * fwiou,
            "pixel_acc": 100.0 * (float(tp.sum() / total) if total > 0 else float("nan")), "pixels": int(total)}


def _nanmean(values: torch.Tensor) -> float:
    defined = ~torch.isnan(values)
    return float(values[defined].mean()) if bool(defined.any()) else float("nan")


class ConfusionAccumulator:
    """Running sum of confusion matrices over a split, one per slot (slot 0 = the whole image; further
    slots are regions such as leave-out rings or border-distance bands, filled by a ``layout``).

    ``update(pred, target)`` adds one image, ``update_batch`` a batch of them; neither reads anything
    back to the host (targets are validated on the device and the count of invalid pixels is read once,
    by ``check()``, which ``all_reduce()`` and ``result()`` call). ``all_reduce()`` sums the matrices and
    the image count over torch.distributed ranks, ``result()`` scores a slot (see
    :func:`scores_from_confusion`).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str = "cpu",
                 slots: int = 1) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrices = torch.zeros(slots, num_classes, num_classes, dtype=torch.long, device=device)
        self.updates = 0  # images counted
        self._rows = _truth_rows(num_classes, ignore_index, self.matrices.device)
        self._invalid: list[torch.Tensor] = []  # (N,) invalid target pixels per image of each batch not checked
        self._checked = 0  # images checked valid by check()

    def update(self, pred: torch.Tensor, target: torch.Tensor, layout=None, check_pred: bool = True) -> torch.Tensor:
        """Count one image: ``pred`` against ``target`` (same shape; (H, W) with a ``layout``). Without
        ``layout`` the pixels go to slot 0; with one (``num_regions``, ``offset(K)`` and
        ``reduce(region_matrices) -> (..., slots, K, K)``, e.g. seg.evaluation.evaluator.RegionLayout)
        every slot is filled from a single scatter-add. ``check_pred`` checks the prediction's ids (a
        host sync; an argmax over K channels needs none). Returns the matrices added, (slots, K, K) with
        a layout, (1, K, K) without."""
        if check_pred:
            _check_pred(pred, self.num_classes)
        # a batch of one: flat without a layout (any shape), (1, H, W) with one
        batch = (pred.reshape(1, -1), target.reshape(1, -1)) if layout is None else (pred[None], target[None])
        return self.update_batch(*batch, layout)[0]

    def update_batch(self, pred: torch.Tensor, target: torch.Tensor, layout=None) -> torch.Tensor:
        """Count a batch of images, pred and target (N, H, W) (prediction ids not checked), with one
        scatter-add and no host sync. Returns the matrices each image added: (N, slots, K, K) with a
        layout, (N, 1, K, K) (slot 0) without."""
        k = self.num_classes
        if layout is None:
            added, invalid = count_pixels(pred, target, k, self.ignore_index, rows=self._rows)
        else:
            counts, invalid = count_pixels(pred, target, k, self.ignore_index, layout.offset(k), layout.num_regions,
                                           rows=self._rows)
            added = layout.reduce(counts)
        self.matrices[:added.shape[1]] += added.sum(0)
        self._invalid.append(invalid)
        self.updates += pred.shape[0]
        return added

    def check(self, describe: Callable[[int], str] | None = None) -> None:
        """DataError if any counted target held an id outside [0, K) other than ``ignore_index`` (one
        host read for the whole pass). ``describe(i) -> str`` names the i-th image counted (default
        "image i")."""
        if not self._invalid:
            return
        invalid = torch.cat(self._invalid)
        bad = torch.nonzero(invalid).flatten().tolist()
        if not bad:  # every image counted so far is valid: nothing left to check
            self._invalid, self._checked = [], self._checked + len(invalid)
            return
        first = self._checked + bad[0]
        name = describe(first) if describe is not None else f"image {first}"
        k = self.num_classes
        raise DataError(f"{name}: target holds {int(invalid[bad[0]])} pixels with ids outside [0, {k}) of "
                        f"model.num_classes={k} other than ignore_index={self.ignore_index}"
                        + (f" ({len(bad) - 1} more image(s) like it)" if len(bad) > 1 else ""))

    def all_reduce(self) -> None:
        """Check, then sum matrices and image counts over all ranks (no-op without an initialised
        process group)."""
        self.check()
        if current_dist().world_size == 1:
            return
        k = self.num_classes
        packed = torch.cat([self.matrices, self.matrices.new_full((1, k, k), self.updates)])
        dist.all_reduce(packed)
        self.matrices, self.updates = packed[:-1], int(packed[-1, 0, 0])

    def result(self, slot: int = 0) -> dict:
        """Scores of one slot's matrix (after :meth:`check`)."""
        self.check()
        return scores_from_confusion(self.matrices[slot])


def centre_leave_out_size(height: int, width: int, proportion: float, by: str = "side") -> tuple[int, int]:
    """Size (h, w) of the centred rectangle blanked for a leave-out ``proportion`` (see LEAVE_OUT_ROUNDING)."""
    if not 0.0 <= proportion <= 1.0:
        raise InputError(f"leave-out proportion must lie in [0, 1], got {proportion}")
    if by == "side":
        f = proportion
    elif by == "area":
        f = math.sqrt(proportion)
    else:
        raise InputError(f"leave_out_by must be 'side' or 'area', got {by!r}")
    return math.floor(f * height + 0.5), math.floor(f * width + 0.5)


def centre_leave_out_mask(height: int, width: int, proportion: float, by: str = "side",
                          device: torch.device | str = "cpu") -> torch.Tensor:
    """Bool mask (H, W): True where a pixel is still scored after blanking the centred rectangle."""
    h, w = centre_leave_out_size(height, width, proportion, by)
    top, left = (height - h) // 2, (width - w) // 2
    mask = torch.ones(height, width, dtype=torch.bool, device=device)
    mask[top:top + h, left:left + w] = False
    return mask


def border_distance(height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Distance in pixels to the nearest image border, int64 (H, W): 0 on the outermost ring."""
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    dr = torch.minimum(rows, height - 1 - rows)
    dc = torch.minimum(cols, width - 1 - cols)
    return torch.minimum(dr[:, None], dc[None, :])


def distance_band_index(height: int, width: int, edges: Sequence[int],
                        device: torch.device | str = "cpu") -> torch.Tensor:
    """Band id per pixel, int64 (H, W): band i holds distances d with edges[i] <= d < edges[i+1],
    the last band is open-ended (edges[-1] <= d). ``edges`` must start at 0 and increase strictly."""
    edges = [int(e) for e in edges]
    if not edges or edges[0] != 0 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise InputError(f"distance_bands must start at 0 and increase strictly, got {edges}")
    d = border_distance(height, width, device)
    boundaries = torch.tensor(edges[1:], device=device, dtype=d.dtype)
    return torch.bucketize(d, boundaries, right=True)
