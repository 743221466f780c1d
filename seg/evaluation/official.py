"""Prediction PNGs (Cityscapes labelIds, or class indices for other label spaces) and scoring with
cityscapesscripts' pixel evaluator.

The official evaluator reads labelIds (0-33), not trainIds (0-18), so predictions are written as the label
space's prediction-file ids (seg.data.labels.CITYSCAPES, derived from cityscapesscripts' label table).
Ground truth: the dataset's ``gtFine/.../*_gtFine_labelIds.png`` next to each image when it exists,
otherwise the target the loader produced, converted the same way (ignore 255 -> 0 "unlabeled", which the
evaluator ignores).
"""
from __future__ import annotations

import io
import os
from collections.abc import Sequence
from contextlib import redirect_stdout

import torch.distributed as dist

from seg.errors import InputError, MissingFileError

from .evaluators import Batch, PassContext
from .result import EvaluationResult
from .visualize import write_png

__all__ = ["cityscapes_gt_path", "PredictionWriter", "official_scores"]


def cityscapes_gt_path(image_path: str, annotation: str = "gtFine") -> str:
    """.../leftImg8bit/val/city/x_leftImg8bit.png -> .../gtFine/val/city/x_gtFine_labelIds.png"""
    head, name = os.path.split(image_path)
    parts = head.split(os.sep)
    if "leftImg8bit" in parts:
        parts[len(parts) - 1 - parts[::-1].index("leftImg8bit")] = annotation
    return os.path.join(os.sep.join(parts), name.replace("_leftImg8bit", f"_{annotation}_labelIds"))


def _stem(path: str) -> str:
    name = os.path.splitext(os.path.basename(path))[0]
    return name[: -len("_leftImg8bit")] if name.endswith("_leftImg8bit") else name


class PredictionWriter:
    """Evaluator (seg.evaluation.evaluators) writing ``<dir>/<stem>_pred_labelIds.png`` (Cityscapes labelIds)
    per image, or ``<dir>/<stem>_pred.png`` holding the class indices for a label space without file ids of
    its own; when no Cityscapes labelId ground truth sits next to the image, also
    ``<dir>/gt/<stem>_gt[_labelIds].png`` converted from the loader's target the same way. Its part of the
    result: ``predictions``, the (prediction, ground truth) paths of all ranks, in loader order."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def reset(self, ctx: PassContext) -> None:
        self.image_paths, indices = ctx.named_files("saving predictions")
        self.labels, self.world_size = ctx.labels, ctx.world_size
        self.suffix = "_labelIds" if self.labels.output_ids is not None else ""
        self.pairs: list[tuple[str, str]] = []
        stems = [_stem(self.image_paths[i]) for i in indices]
        if len(set(stems)) != len(stems):
            raise InputError(f"image file names are not unique, predictions in {self.out_dir} would overwrite "
                             f"each other")
        os.makedirs(os.path.join(self.out_dir, "gt"), exist_ok=True)

    def process(self, batch: Batch) -> None:
        if batch.targets is None or batch.indices is None:
            raise InputError("saving predictions needs targets and a loader that does not shuffle")
        for j, index in enumerate(batch.indices):
            path = self.image_paths[index]
            stem = _stem(path)
            pred_path = os.path.join(self.out_dir, f"{stem}_pred{self.suffix}.png")
            write_png(pred_path, self.labels.to_output_ids(batch.preds[j].cpu().numpy()))
            gt_path = cityscapes_gt_path(path) if self.labels.output_ids is not None else ""
            if not os.path.isfile(gt_path):
                gt_path = os.path.join(self.out_dir, "gt", f"{stem}_gt{self.suffix}.png")
                write_png(gt_path, self.labels.to_output_ids(batch.targets[j].cpu().numpy()))
            self.pairs.append((pred_path, gt_path))

    def evaluate(self) -> EvaluationResult:
        pairs = self.pairs
        if self.world_size > 1:
            gathered: list[list] = [[] for _ in range(self.world_size)]  # one slot per rank, filled by it
            dist.all_gather_object(gathered, pairs)
            pairs = [pair for part in gathered for pair in part]
        return EvaluationResult(predictions=pairs)


def official_scores(pairs: Sequence[tuple[str, str]], quiet: bool = True) -> dict:
    """Score (prediction labelId PNG, ground-truth labelId PNG) pairs with cityscapesscripts.

    Returns {"mIoU": percent, "IoU": {class name: percent or NaN}, "raw": the evaluator's result dict}.
    """
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs
    if not pairs:
        raise InputError("no predictions to score with cityscapesscripts")
    for pred, gt in pairs:
        for p in (pred, gt):
            if not os.path.isfile(p):
                raise MissingFileError(f"official evaluation: missing file {p}")
    args = cs.CArgs()
    for key, value in vars(cs.args).items():
        setattr(args, key, value)
    args.evalInstLevelScore = False  # needs instanceIds files, not part of the semantic mIoU
    args.JSONOutput = False
    args.quiet = quiet
    args.colorized = False
    args.bold = args.nocol = ""
    preds, gts = zip(*pairs)
    sink = io.StringIO()
    with redirect_stdout(sink):
        raw = cs.evaluateImgLists(list(preds), list(gts), args)
    return {"mIoU": 100.0 * raw["averageScoreClasses"],
            "IoU": {name: 100.0 * v for name, v in raw["classScores"].items()}, "raw": raw}
