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

import torch

from seg.data.labels import CITYSCAPES, LabelSpace
from seg.errors import InputError, MissingFileError

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
    """Writes ``<dir>/<stem>_pred_labelIds.png`` (Cityscapes labelIds) per image, or ``<dir>/<stem>_pred.png``
    holding the class indices for a label space without file ids of its own; when no Cityscapes labelId
    ground truth sits next to the image, also ``<dir>/gt/<stem>_gt[_labelIds].png`` converted from the
    loader's target the same way. ``pairs`` lists the (prediction, ground truth) paths written so far, in
    loader order."""

    def __init__(self, out_dir: str, image_paths: Sequence[str], indices: Sequence[int],
                 labels: LabelSpace = CITYSCAPES) -> None:
        self.out_dir = out_dir
        self.image_paths = image_paths
        self.indices = indices
        self.labels = labels
        self.suffix = "_labelIds" if labels.output_ids is not None else ""
        self.pairs: list[tuple[str, str]] = []
        stems = [_stem(image_paths[i]) for i in indices]
        if len(set(stems)) != len(stems):
            raise InputError(f"image file names are not unique, predictions in {out_dir} would overwrite each other")
        os.makedirs(os.path.join(out_dir, "gt"), exist_ok=True)

    def __call__(self, position: int, image: torch.Tensor, pred: torch.Tensor, target: torch.Tensor) -> None:
        for j in range(pred.shape[0]):
            path = self.image_paths[self.indices[position + j]]
            stem = _stem(path)
            pred_path = os.path.join(self.out_dir, f"{stem}_pred{self.suffix}.png")
            write_png(pred_path, self.labels.to_output_ids(pred[j].cpu().numpy()))
            gt_path = cityscapes_gt_path(path) if self.labels.output_ids is not None else ""
            if not os.path.isfile(gt_path):
                gt_path = os.path.join(self.out_dir, "gt", f"{stem}_gt{self.suffix}.png")
                write_png(gt_path, self.labels.to_output_ids(target[j].cpu().numpy()))
            self.pairs.append((pred_path, gt_path))


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
