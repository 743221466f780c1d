"""Cityscapes-format predictions (labelId PNGs) and scoring with cityscapesscripts' pixel evaluator.

The official evaluator reads labelIds (0-33), not trainIds (0-18), so predictions are mapped back
with cityscapesscripts' own label table before writing. Ground truth: the dataset's
``gtFine/.../*_gtFine_labelIds.png`` next to each image when it exists, otherwise the target the loader
produced, converted trainId -> labelId (ignore 255 -> 0 "unlabeled", which the evaluator ignores).
"""
from __future__ import annotations

import io
import os
from contextlib import redirect_stdout
from typing import Sequence

import cv2
import numpy as np
import torch

__all__ = ["trainid_to_labelid_lut", "trainid_to_labelid", "cityscapes_gt_path", "PredictionWriter",
           "official_scores"]


def trainid_to_labelid_lut() -> np.ndarray:
    """uint8 lookup table of 256 entries: trainId -> Cityscapes labelId; 255 and unused ids -> 0."""
    from cityscapesscripts.helpers.labels import labels
    lut = np.zeros(256, dtype=np.uint8)
    for label in labels:
        if 0 <= label.trainId < 255 and label.id >= 0:
            lut[label.trainId] = label.id
    return lut


_LUT = None


def trainid_to_labelid(trainids: torch.Tensor | np.ndarray) -> np.ndarray:
    """Map an (H, W) trainId map to a uint8 labelId map."""
    global _LUT
    if _LUT is None:
        _LUT = trainid_to_labelid_lut()
    a = trainids.cpu().numpy() if isinstance(trainids, torch.Tensor) else np.asarray(trainids)
    return _LUT[a.astype(np.int64)]


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
    """Writes ``<dir>/<stem>_pred_labelIds.png`` per image; when no Cityscapes labelId ground truth sits
    next to the image, also ``<dir>/gt/<stem>_gt_labelIds.png`` converted from the loader's target.
    ``pairs`` lists the (prediction, ground truth) paths written so far, in loader order."""

    def __init__(self, out_dir: str, image_paths: Sequence[str], indices: Sequence[int]) -> None:
        self.out_dir = out_dir
        self.image_paths = image_paths
        self.indices = indices
        self.pairs: list[tuple[str, str]] = []
        stems = [_stem(image_paths[i]) for i in indices]
        if len(set(stems)) != len(stems):
            raise ValueError(f"image file names are not unique, predictions in {out_dir} would overwrite each other")
        os.makedirs(os.path.join(out_dir, "gt"), exist_ok=True)

    def __call__(self, position: int, image: torch.Tensor, pred: torch.Tensor, target: torch.Tensor) -> None:
        for j in range(pred.shape[0]):
            path = self.image_paths[self.indices[position + j]]
            stem = _stem(path)
            pred_path = os.path.join(self.out_dir, f"{stem}_pred_labelIds.png")
            _write_png(pred_path, trainid_to_labelid(pred[j]))
            gt_path = cityscapes_gt_path(path)
            if not os.path.isfile(gt_path):
                gt_path = os.path.join(self.out_dir, "gt", f"{stem}_gt_labelIds.png")
                _write_png(gt_path, trainid_to_labelid(target[j]))
            self.pairs.append((pred_path, gt_path))


def _write_png(path: str, array: np.ndarray) -> None:
    if not cv2.imwrite(path, np.ascontiguousarray(array)):
        raise OSError(f"could not write {path}")


def official_scores(pairs: Sequence[tuple[str, str]], quiet: bool = True) -> dict:
    """Score (prediction labelId PNG, ground-truth labelId PNG) pairs with cityscapesscripts.

    Returns {"mIoU": percent, "IoU": {class name: percent or NaN}, "raw": the evaluator's result dict}.
    """
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs
    if not pairs:
        raise ValueError("no predictions to score with cityscapesscripts")
    for pred, gt in pairs:
        for p in (pred, gt):
            if not os.path.isfile(p):
                raise FileNotFoundError(f"official evaluation: missing file {p}")
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
