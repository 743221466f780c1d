"""One inference pass (:func:`run_inference`) feeding composable evaluators, and the segmentation scores
(:class:`SegmentationEvaluator`): confusion matrices, centre leave-out and border-distance bands.

Distributed use (torchrun): ``run_inference`` does *not* shard the data itself. The caller passes a loader
whose sampler gives each rank a distinct share of the split -- :func:`seg.engine.loaders.build_eval_loader`
does that with a :class:`~seg.engine.loaders.ShardSampler` (no padding, so every image is counted exactly
once). A ``torch.utils.data.DistributedSampler`` also works, but it pads the split with repeats so up to
W-1 images are counted twice. All confusion matrices are then summed across ranks with one
``all_reduce``, so every rank returns the same scores.
"""
from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from seg.data.labels import CITYSCAPES, LabelSpace, default_palette
from seg.engine.distributed import current_dist
from seg.engine.loaders import ShardSampler
from seg.errors import InputError
from seg.progress import progress_bar

from .evaluators import Batch, Evaluator, PassContext
from .inference import InferenceSettings, NetworkTimer, preprocess, to_device
from .metrics import (
    LEAVE_OUT_MEANING,
    LEAVE_OUT_ROUNDING,
    ConfusionAccumulator,
    centre_leave_out_mask,
    distance_band_index,
    leave_out_readings,
    region_stride,
    scores_from_confusion,
)
from .result import EvaluationResult
from .stats import REGION_ALL, counts_from_confusion

__all__ = ["run_inference", "pass_context", "SegmentationEvaluator", "default_label_space", "RegionLayout",
           "region_layout", "predicted_classes", "leave_out_keys"]


def default_label_space(num_classes: int) -> LabelSpace:
    """The label space to assume when the caller names none: Cityscapes for 19 classes, otherwise
    ``class_<i>`` names with the default palette and class indices written as they are."""
    if num_classes == CITYSCAPES.num_classes:
        return CITYSCAPES
    return LabelSpace(tuple(f"class_{i}" for i in range(num_classes)), default_palette(num_classes))


class RegionLayout:
    """Partition of an (H, W) image into regions with the same (leave-out membership, distance band).

    One scatter-add over region ids gives a confusion matrix per region; leave-out and band matrices are
    sums of region matrices, so all analyses come from one pass at the cost of a single scatter-add.
    """

    def __init__(self, height: int, width: int, leave_out: Sequence[float], leave_out_by: str,
                 distance_bands: Sequence[int], device: torch.device) -> None:
        # one bit per (reading, proportion), readings in leave_out_readings' order: "both" scores side, then area
        masks = [(by, p) for by in leave_out_readings(leave_out_by) for p in leave_out]
        if len(masks) > 16:
            raise InputError(f"at most 16 leave-out regions per pass (proportions x readings), got {len(masks)}")
        code = torch.zeros(height, width, dtype=torch.long, device=device)
        for i, (by, p) in enumerate(masks):
            code |= centre_leave_out_mask(height, width, p, by, device).long() << i
        num_bits = len(masks)
        if distance_bands:
            code |= distance_band_index(height, width, distance_bands, device) << num_bits
        # compact the codes that occur to 0..R-1 with an O(N) occupancy table (no sort, unlike torch.unique)
        present = torch.bincount(code.reshape(-1)) > 0
        lut = present.long().cumsum(0) - 1
        codes = torch.nonzero(present).flatten()
        self.region = lut[code]
        self.num_regions = codes.numel()
        bits = torch.arange(num_bits, device=device)
        self.scored = ((codes[None, :] >> bits[:, None]) & 1).bool()  # (L, R)
        self.band = codes >> num_bits  # (R,)
        self.num_bands = max(len(distance_bands), 1)
        self.has_bands = bool(distance_bands)
        self._offsets: dict[int, torch.Tensor] = {}

    def offset(self, num_classes: int) -> torch.Tensor:
        """(H, W) bin offset of each pixel's region in seg.evaluation.metrics.count_pixels (cached)."""
        if num_classes not in self._offsets:
            self._offsets[num_classes] = self.region * region_stride(num_classes)
        return self._offsets[num_classes]

    def reduce(self, region_cm: torch.Tensor) -> torch.Tensor:
        """(..., R, K, K) region matrices -> (..., slots, K, K): the whole image, then leave-out
        proportions (of each reading in turn), then distance bands."""
        r, k = region_cm.shape[-3], region_cm.shape[-1]
        lead = region_cm.shape[:-3]
        # (L, R) x (..., R, K*K) in float64: exact for counts below 2**53, and matmul runs on any device
        flat = region_cm.reshape(*lead, r, k * k).double()
        leave = (self.scored.double() @ flat).round().long().reshape(*lead, -1, k, k)
        parts = [region_cm.sum(-3, keepdim=True), leave]
        if self.has_bands:
            bands = region_cm.new_zeros(*lead, self.num_bands, k, k)
            parts.append(bands.index_add_(region_cm.dim() - 3, self.band, region_cm))
        return torch.cat(parts, -3)


@functools.lru_cache(maxsize=4)  # a few image sizes; each entry holds two (H, W) int64 maps
def _cached_layout(size: tuple[int, int], leave_out: tuple[float, ...], leave_out_by: str,
                   distance_bands: tuple[int, ...], device: torch.device) -> RegionLayout:
    return RegionLayout(*size, leave_out, leave_out_by, distance_bands, device)


def region_layout(size: Sequence[int], leave_out: Sequence[float] = (), leave_out_by: str = "side",
                  distance_bands: Sequence[int] = (), device: torch.device | str = "cpu") -> RegionLayout:
    """Region layout per image size (H, W), cached across passes (periodic validation reuses it):
    built, with a few host syncs, on the first image of a size only."""
    return _cached_layout(tuple(int(v) for v in size), tuple(float(p) for p in leave_out), leave_out_by,
                          tuple(int(e) for e in distance_bands), torch.device(device))


def predicted_classes(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, K, H, W) logits -> (N, H, W) int64 class of the first maximum (argmax's rule); ValueError when
    K is not ``num_classes``."""
    if logits.shape[1] != num_classes:
        raise InputError(f"model returned {logits.shape[1]} channels but num_classes={num_classes}")
    return logits.max(1).indices  # ~4x faster than argmax on CPU over dim 1


def _fraction_label(p: float) -> str:
    f = Fraction(p).limit_denominator(64)
    return str(f) if abs(float(f) - p) < 1e-9 else f"{p:g}"


def _check_sampler(loader: DataLoader, world_size: int) -> None:
    if world_size == 1:
        return
    sampler = getattr(loader, "sampler", None)
    if not isinstance(sampler, (ShardSampler, DistributedSampler)):
        raise InputError(f"run_inference() under torch.distributed (world size {world_size}) needs a loader sharded "
                         f"per rank (ShardSampler via build_eval_loader, or DistributedSampler); got "
                         f"{type(sampler).__name__}, which would count every image {world_size} times")


def _sample_indices(loader: DataLoader) -> list[int] | None:
    """Dataset index of every sample in loader order; None when the order is not known in advance (a
    shuffling or unsized sampler)."""
    if isinstance(loader.sampler, RandomSampler) or getattr(loader.sampler, "shuffle", False):
        return None
    try:
        if loader.batch_sampler is None:  # batch_size=None: one sample per step
            return list(loader.sampler)
        return [i for batch in loader.batch_sampler for i in batch]
    except TypeError:
        return None


def _image_namer(paths: Sequence[str] | None, indices: Sequence[int] | None) -> Callable[[int], str]:
    """``name(i)``: the file of the i-th image of this rank's pass, or "image i" when the dataset lists no
    image_paths, "image i of the pass" when the loader's order is unknown."""
    def name(i: int) -> str:
        if paths is None:
            return f"image {i}"
        if indices is None or i >= len(indices):
            return f"image {i} of the pass"
        return paths[indices[i]]
    return name


def pass_context(loader: DataLoader, device: torch.device, labels: LabelSpace, mode: str) -> PassContext:
    """The :class:`PassContext` of a pass over ``loader``: the dataset's image_paths (when it lists them)
    and the loader's order."""
    info = current_dist()
    rank, world_size = info.rank, info.world_size
    paths = getattr(loader.dataset, "image_paths", None)
    indices = _sample_indices(loader)
    return PassContext(device, rank, world_size, labels, mode, paths, indices, _image_namer(paths, indices))


def run_inference(model: Callable, loader: DataLoader, settings: InferenceSettings | None,
                  evaluators: Sequence[Evaluator], *, device: torch.device | str, labels: LabelSpace | None = None,
                  normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  progress: bool = True) -> EvaluationResult:
    """Run ``model`` once over ``loader`` and hand every batch to each of ``evaluators`` (see
    seg.evaluation.evaluators); returns their parts merged, with "settings" (``settings.as_dict()``, the
    ignore value, the world size) and "timing" (total / network / outside-network seconds) added.

    Args:
        model: callable on (N, 3, H, W) normalised images returning logits (N, K, H, W) (any nn.Module);
            put in eval mode for the pass and restored to its previous mode afterwards.
        loader: yields (image (N, 3, H, W), target int (N, H, W) with the ignore value = don't care), or one
            uncollated (3, H, W), (H, W) sample per step, or images alone. uint8 images go to ``device`` as
            they are and are normalised there by ``normalize`` (default: ``loader.dataset.normalize``, what
            seg.data's datasets carry); floating images are taken as normalised already. Under
            torch.distributed it must be sharded per rank (see module docstring).
        settings: how logits are computed (None: whole image, one scale, no flip).
        labels: class names, palette, ignore value and prediction-file ids (default: Cityscapes); the model
            must return one channel per class.
    """
    settings = settings or InferenceSettings()
    labels = labels or CITYSCAPES
    ctx = pass_context(loader, torch.device(device), labels, settings.mode)
    _check_sampler(loader, ctx.world_size)
    for evaluator in evaluators:
        evaluator.reset(ctx)
    normalize = normalize or getattr(loader.dataset, "normalize", None)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    timer = NetworkTimer()
    position = 0
    start = time.perf_counter()
    try:
        for sample in progress_bar(loader, desc=f"eval[{settings.mode}]", disable=not progress or ctx.rank != 0,
                                   dynamic_ncols=True):
            batch = _infer(model, sample, settings, ctx, position, normalize, timer)
            for evaluator in evaluators:
                evaluator.process(batch)
            position += len(batch)
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    result = EvaluationResult.merge([evaluator.evaluate() for evaluator in evaluators])
    elapsed = time.perf_counter() - start
    result.update(settings=dict(settings.as_dict(), ignore_index=labels.ignore_index, world_size=ctx.world_size),
                  timing=_timing(elapsed, timer))
    return result


def _infer(model: Callable, sample, settings: InferenceSettings, ctx: PassContext, position: int,
           normalize: Callable[[torch.Tensor], torch.Tensor] | None, timer: NetworkTimer) -> Batch:
    """One loader step through the network: the :class:`Batch` the evaluators see."""
    moved = to_device(sample if isinstance(sample, (list, tuple)) else (sample,), ctx.device)
    image = moved[0]
    target = moved[1] if len(moved) > 1 else None
    logits = settings.predict(model, preprocess(image, normalize), forward=timer)
    n = logits.shape[0]
    indices = ctx.sample_indices[position:position + n] if ctx.sample_indices is not None else None
    return Batch(image, logits, predicted_classes(logits, ctx.labels.num_classes), target, position, indices)


def _timing(elapsed: float, timer: NetworkTimer) -> dict:
    return {"total_s": elapsed, "network_s": timer.seconds, "outside_network_s": elapsed - timer.seconds,
            "outside_share": (elapsed - timer.seconds) / elapsed if elapsed > 0 else math.nan,
            "network_calls": timer.calls}


class SegmentationEvaluator:
    """Scores of a pass from one confusion matrix over the split: mIoU, mAcc, fwIoU, pixel accuracy, per-class
    IoU and Acc, and the same scores per centre leave-out proportion and per border-distance band, all
    counted in one scatter-add per batch (RegionLayout).

    Args:
        leave_out: centre leave-out proportions, each scored from the same pass; ``leave_out_by`` is "side",
            "area" (meaning written in the result) or "both": each proportion under both readings from the
            same pass, side in "leave_out", area in "leave_out_area".
        distance_bands: band edges in pixels of distance to the nearest image border, e.g. [0, 16, 32].
        image_stats: also return per-image, per-region class counts (what a bootstrap over images needs;
            :mod:`seg.evaluation.stats`), in dataset order across ranks.

    Nothing is read back to the host until :meth:`evaluate` (the confusion matrices, per-image counts and
    the check of the targets' ids stay on the device; a target id outside the classes is a DataError naming
    the file, raised after the pass). Under torch.distributed every rank returns the summed scores.

    The result's entries: "mIoU", "mAcc", "fwIoU", "pixel_acc" (0-100), "IoU" and "Acc" (per class, NaN
    where undefined), "pixels", "num_classes", "class_names", "num_images", "confusion_matrix", "metric",
    "leave_out" (and "leave_out_area" under "both"), "distance_bands"; ``image_stats`` beside them.
    """

    def __init__(self, leave_out: Sequence[float] = (), leave_out_by: str = "side",
                 distance_bands: Sequence[int] = (), image_stats: bool = False) -> None:
        self.readings = leave_out_readings(leave_out_by)
        self.leave_out = [float(p) for p in leave_out]
        self.leave_out_by = leave_out_by
        self.distance_bands = [int(e) for e in distance_bands]
        self.image_stats = image_stats

    def reset(self, ctx: PassContext) -> None:
        if self.image_stats:
            ctx.ordered_indices("per-image statistics")
        self.ctx = ctx
        # slots in RegionLayout.reduce's order: the whole image, each leave-out proportion, each distance band
        slots = 1 + len(self.readings) * len(self.leave_out) + len(self.distance_bands)
        self.counts = ConfusionAccumulator(ctx.labels.num_classes, ctx.labels.ignore_index, ctx.device, slots=slots)
        self.per_image: list[torch.Tensor] = []  # (N, regions, 3, K) counts per batch, with image_stats

    def process(self, batch: Batch) -> None:
        if batch.targets is None:
            raise InputError("scoring a pass needs targets: the loader yields images only")
        layout = region_layout(batch.targets.shape[-2:], self.leave_out, self.leave_out_by, self.distance_bands,
                               self.ctx.device)
        added = self.counts.update_batch(batch.preds, batch.targets, layout)  # per image: the bootstrap resamples
        if self.image_stats:
            self.per_image.append(counts_from_confusion(added))

    def evaluate(self) -> EvaluationResult:
        self.counts.check(self.ctx.image_name)
        self.counts.all_reduce()
        metrics = _assemble(self.counts, self.ctx.labels, self.leave_out, self.leave_out_by, self.distance_bands)
        stats = None
        if self.image_stats:
            stats = _image_stats(self.per_image, self.ctx, metrics["class_names"], _region_labels(metrics))
        return EvaluationResult(metrics, image_stats=stats)


def _image_stats(per_image: list[torch.Tensor], ctx: PassContext, class_names: list[str],
                 regions: list[str]) -> dict:
    """Per-image counts of all ranks in dataset order, as numpy: intersection / prediction / ground_truth
    (N, regions, K), with the image names (file stems when the dataset has image_paths)."""
    indices = list(ctx.ordered_indices("per-image statistics"))
    k = len(class_names)
    counts = (torch.cat(per_image) if per_image else torch.zeros(0, len(regions), 3, k, dtype=torch.long)).cpu()
    if ctx.world_size > 1:  # every rank holds its shard; gather and restore the dataset order
        # one (indices, counts) slot per rank, each replaced by that rank's shard
        gathered: list[tuple[list[int], np.ndarray]] = [([], np.zeros(0)) for _ in range(ctx.world_size)]
        dist.all_gather_object(gathered, (indices, counts.numpy()))
        indices = [i for part, _ in gathered for i in part]
        counts = torch.from_numpy(np.concatenate([c for _, c in gathered]))
    order = sorted(range(len(indices)), key=indices.__getitem__)
    ordered = counts[order].numpy()
    paths = ctx.image_paths
    names = [os.path.basename(paths[indices[i]]).split(".")[0] if paths is not None else str(indices[i])
             for i in order]
    return {"intersection": ordered[:, :, 0], "prediction": ordered[:, :, 1], "ground_truth": ordered[:, :, 2],
            "regions": regions, "images": names, "class_names": class_names}


def leave_out_key(by: str, index: int) -> str:
    """Result key of the ``index``-th leave-out reading scored: "leave_out" for the first (the only one unless
    leave_out_by is "both"), "leave_out_<by>" for the others."""
    return "leave_out" if index == 0 else f"leave_out_{by}"


def leave_out_keys(result: Mapping) -> list[str]:
    """The result's leave-out blocks, in scoring order ("leave_out", then "leave_out_area" under "both")."""
    return [key for key in ("leave_out", *(f"leave_out_{by}" for by in LEAVE_OUT_MEANING)) if key in result]


def _region_labels(result: dict) -> list[str]:
    """Labels of the regions counted per image: the whole image, leave-out proportions, distance bands."""
    labels = [REGION_ALL]
    labels += [f"{key} {row['label']}" for key in leave_out_keys(result) for row in result[key]["results"]]
    labels += [f"band {row['label']}" for row in result.get("distance_bands", {}).get("results", [])]
    return labels


def _scores(cm: torch.Tensor) -> dict:
    s = scores_from_confusion(cm)
    return {key: s[key] for key in ("mIoU", "IoU", "mAcc", "fwIoU", "pixel_acc")}


def _assemble(counts: ConfusionAccumulator, labels: LabelSpace, leave_out, leave_out_by, distance_bands) -> dict:
    overall = counts.result()
    result = {
        "mIoU": overall["mIoU"], "mAcc": overall["mAcc"], "fwIoU": overall["fwIoU"], "IoU": overall["IoU"],
        "Acc": overall["Acc"], "pixel_acc": overall["pixel_acc"], "pixels": overall["pixels"],
        "num_classes": counts.num_classes, "class_names": list(labels.class_names), "num_images": counts.updates,
        "confusion_matrix": counts.matrices[0].cpu().tolist(),
        "metric": f"IoU = TP/(TP+FP+FN) and Acc = TP/(TP+FN) per class from one confusion matrix over the split "
                  f"(ignore {labels.ignore_index}); mIoU / mAcc = mean over classes where defined; fwIoU = IoU "
                  f"weighted by each class's share of the ground-truth pixels; all in percent",
    }
    readings = leave_out_readings(leave_out_by)
    n = len(leave_out)
    bands = counts.matrices[1 + len(readings) * n:]
    for i, by in enumerate(readings if leave_out else ()):
        rows = [{"proportion": p, "label": _fraction_label(p), **_scores(cm), "scored_pixels": int(cm.sum())}
                for p, cm in zip(leave_out, counts.matrices[1 + i * n:1 + (i + 1) * n])]
        result[leave_out_key(by, i)] = {"by": by, "meaning": LEAVE_OUT_MEANING[by], "rounding": LEAVE_OUT_ROUNDING,
                                        "results": rows}
    if distance_bands:
        rows = []
        for i, cm in enumerate(bands):
            lo = distance_bands[i]
            hi = distance_bands[i + 1] if i + 1 < len(distance_bands) else None
            rows.append({"band": [lo, hi], "label": f"{lo}-{hi}" if hi is not None else f"{lo}+", **_scores(cm),
                         "pixels": int(cm.sum())})
        result["distance_bands"] = {
            "meaning": "distance d = min(row, col, H-1-row, W-1-col) in pixels to the nearest image border "
                       "(0 on the outermost ring); band [a, b) holds a <= d < b, the last band is open",
            "results": rows}
    return result
