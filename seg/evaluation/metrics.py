"""Confusion-matrix metrics and the spatial masks used for border analysis.

Everything here works on integer label maps on any device; the confusion matrix is built with one
``torch.bincount`` so a whole evaluation never leaves the accelerator until the final reduction.

Conventions (shared with :mod:`seg.evaluation.evaluator`):

* ``confusion[t, p]`` counts pixels whose ground truth is ``t`` and prediction ``p`` (rows = truth),
  the layout of cityscapesscripts' ``confMatrix``.
* IoU of class ``c`` is ``TP / (TP + FP + FN)``; a class absent from both truth and prediction has an
  undefined IoU (NaN) and is left out of the mean, exactly as ``getScoreAverage`` in cityscapesscripts.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist

from seg.data.io import DataError
from seg.engine.loaders import world

__all__ = [
    "confusion_matrix",
    "ConfusionAccumulator",
    "scores_from_confusion",
    "centre_leave_out_size",
    "centre_leave_out_mask",
    "border_distance",
    "distance_band_index",
    "LEAVE_OUT_MEANING",
    "LEAVE_OUT_ROUNDING",
]

LEAVE_OUT_MEANING = {
    "side": "proportion p blanks (sets to ignore) a centred rectangle of round(p*H) x round(p*W) pixels; "
            "only the ring around it is scored",
    "area": "proportion p blanks a centred rectangle with the image's aspect ratio covering a fraction p of "
            "the image area (each side scaled by sqrt(p)): round(sqrt(p)*H) x round(sqrt(p)*W) pixels",
}
LEAVE_OUT_ROUNDING = ("round half up: h = floor(f*H + 0.5), w = floor(f*W + 0.5) with f = p (side) or sqrt(p) (area); "
                      "the blanked rows are [(H-h)//2, (H-h)//2 + h), columns [(W-w)//2, (W-w)//2 + w)")


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255,
                     region: torch.Tensor | None = None, num_regions: int = 1,
                     region_offset: torch.Tensor | None = None, check_pred: bool = True) -> torch.Tensor:
    """Confusion matrix of integer label maps, on their device, with one bincount.

    Args:
        pred: predicted class ids, any shape, values in [0, num_classes) (checked unless ``check_pred``
            is False, e.g. for an argmax over num_classes channels).
        target: ground-truth ids, same shape; ``ignore_index`` (>= 0) pixels are skipped, any other id
            outside [0, num_classes) is an error.
        region: optional region id per pixel (same shape or broadcastable), values in [0, num_regions):
            one confusion matrix per region is built by the same single bincount.
        region_offset: ``region * num_classes**2`` precomputed (saves a pass when reused); replaces region.
    Returns:
        int64 tensor (num_classes, num_classes), or (num_regions, num_classes, num_classes) when
        ``region`` is given; rows index the ground truth.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    if ignore_index < 0:
        raise ValueError(f"ignore_index must be >= 0, got {ignore_index}")
    k, k2 = num_classes, num_classes * num_classes
    bins = num_regions * k2
    t, p = target.long(), pred.long()
    if t.numel():  # min/max reductions only: no boolean compaction (which syncs on GPU)
        t_min, t_max = (int(v) for v in t.aminmax())
        if t_min < 0 or t_max > max(k - 1, ignore_index):
            raise DataError(f"target holds ids outside [0, {k}) of model.num_classes={k} other than "
                            f"ignore_index={ignore_index}: min {t_min}, max {t_max}")
        if check_pred:
            p_min, p_max = (int(v) for v in p.aminmax())
            if p_min < 0 or p_max >= k:
                raise ValueError(f"prediction holds ids outside [0, {k}): min {p_min}, max {p_max}")
    # Row offset per target id by table lookup: class c -> c*K; ignore -> past the real bins (dropped);
    # any other id -> a sentinel range checked below. Saves separate mask / where passes.
    lut = torch.full((max(k, ignore_index + 1),), 2 * bins, dtype=torch.long, device=t.device)
    lut[:k] = torch.arange(k, device=t.device) * k
    lut[ignore_index] = bins
    index = lut[t] + p
    if region_offset is None and region is not None:
        region_offset = region.long() * k2
    if region_offset is not None:
        index += region_offset.expand_as(index)
    counts = torch.bincount(index.reshape(-1), minlength=3 * bins)
    if t.numel() and int(counts[2 * bins:].sum()):
        raise DataError(f"target holds ids outside [0, {k}) of model.num_classes={k} other than "
                        f"ignore_index={ignore_index}")
    counts = counts[:bins]
    if region is None and region_offset is None:
        return counts.reshape(k, k)
    return counts.reshape(num_regions, k, k)


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

    ``update(pred, target)`` adds one image (or batch), ``all_reduce()`` sums the matrices and the update
    count over torch.distributed ranks, ``result()`` scores a slot (see :func:`scores_from_confusion`).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str = "cpu",
                 slots: int = 1) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrices = torch.zeros(slots, num_classes, num_classes, dtype=torch.long, device=device)
        self.updates = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor, layout=None, check_pred: bool = True) -> torch.Tensor:
        """Count ``pred`` against ``target`` (same shape). Without ``layout`` the pixels go to slot 0; with
        one (``num_regions``, ``offset(K)`` and ``reduce(region_matrices) -> (slots, K, K)``, e.g.
        seg.evaluation.evaluator.RegionLayout) every slot is filled from a single bincount.
        Returns the matrices this update added, (slots, K, K)."""
        k = self.num_classes
        if layout is None:
            added = confusion_matrix(pred, target, k, self.ignore_index, check_pred=check_pred)[None]
            self.matrices[0] += added[0]
        else:
            region_cm = confusion_matrix(pred, target, k, self.ignore_index, num_regions=layout.num_regions,
                                         region_offset=layout.offset(k), check_pred=check_pred)
            added = layout.reduce(region_cm)
            self.matrices += added
        self.updates += 1
        return added

    def all_reduce(self) -> None:
        """Sum matrices and update counts over all ranks (no-op without an initialised process group)."""
        if world()[1] == 1:
            return
        k = self.num_classes
        packed = torch.cat([self.matrices, self.matrices.new_full((1, k, k), self.updates)])
        dist.all_reduce(packed)
        self.matrices, self.updates = packed[:-1], int(packed[-1, 0, 0])

    def result(self, slot: int = 0) -> dict:
        """Scores of one slot's matrix."""
        return scores_from_confusion(self.matrices[slot])


def centre_leave_out_size(height: int, width: int, proportion: float, by: str = "side") -> tuple[int, int]:
    """Size (h, w) of the centred rectangle blanked for a leave-out ``proportion`` (see LEAVE_OUT_ROUNDING)."""
    if not 0.0 <= proportion <= 1.0:
        raise ValueError(f"leave-out proportion must lie in [0, 1], got {proportion}")
    if by == "side":
        f = proportion
    elif by == "area":
        f = math.sqrt(proportion)
    else:
        raise ValueError(f"leave_out_by must be 'side' or 'area', got {by!r}")
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
        raise ValueError(f"distance_bands must start at 0 and increase strictly, got {edges}")
    d = border_distance(height, width, device)
    boundaries = torch.tensor(edges[1:], device=device, dtype=d.dtype)
    return torch.bucketize(d, boundaries, right=True)
