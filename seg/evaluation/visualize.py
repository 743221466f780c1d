"""Palette overlays, error maps and class legends for qualitative inspection (``--show-dir``, predict).

Colours and class names come from the dataset's :class:`seg.data.labels.LabelSpace`.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from seg.data.labels import CITYSCAPES, LabelSpace
from seg.data.png import write_png  # re-exported: predict and official write through it
from seg.errors import InputError

from .evaluators import Batch, PassContext
from .result import EvaluationResult

__all__ = ["colorize", "error_map", "overlay", "legend", "titled", "write_png", "write_rgb", "PanelWriter"]

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def colorize(label: np.ndarray, labels: LabelSpace = CITYSCAPES) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 RGB in the label space's palette; other values (the ignore
    value) are black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:labels.num_classes] = labels.palette
    return lut[np.asarray(label).astype(np.int64) & 255]


def error_map(pred: np.ndarray, target: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """(H, W, 3) uint8 RGB: green correct, red wrong, black ignored."""
    out = np.zeros(pred.shape + (3,), dtype=np.uint8)
    valid = target != ignore_index
    out[valid & (pred == target)] = (0, 160, 0)
    out[valid & (pred != target)] = (230, 30, 30)
    return out


def overlay(rgb: np.ndarray, label: np.ndarray, labels: LabelSpace = CITYSCAPES, alpha: float = 0.5) -> np.ndarray:
    """Palette colours of ``label`` blended over the uint8 RGB image with weight ``alpha``."""
    return (alpha * colorize(label, labels) + (1 - alpha) * rgb).round().astype(np.uint8)


def titled(image: np.ndarray, title: str, bar: int = 20) -> np.ndarray:
    """The RGB image under a white bar holding ``title``."""
    head = np.full((bar, image.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(head, title, (4, bar - 6), _FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([head, image], 0)


def legend(classes: Sequence[int], labels: LabelSpace, width: int, row: int = 18) -> np.ndarray:
    """White RGB strip ``width`` wide: a colour swatch and the name of each class in ``classes``, as many
    per line as fit."""
    entries = [(labels.class_names[c], labels.palette[c]) for c in classes]
    cell = max([cv2.getTextSize(name, _FONT, 0.4, 1)[0][0] for name, _ in entries] + [40]) + row + 10
    per_line = max(1, width // cell)
    lines = max(1, -(-len(entries) // per_line))
    strip = np.full((lines * row + 4, width, 3), 255, dtype=np.uint8)
    for i, (name, colour) in enumerate(entries):
        x, y = (i % per_line) * cell + 4, (i // per_line) * row + 2
        cv2.rectangle(strip, (x, y + 2), (x + row - 6, y + row - 4), tuple(int(v) for v in colour), -1)
        cv2.putText(strip, name, (x + row - 2, y + row - 6), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def write_rgb(path: str, rgb: np.ndarray) -> None:
    """Write an RGB uint8 array as PNG, atomically; OSError naming the path and the reason when that fails."""
    write_png(path, cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))


class PanelWriter:
    """Evaluator (seg.evaluation.evaluators) writing ``<dir>/<stem>_show.png`` per image: a 2x2 panel of titled
    image | ground truth (palette) over prediction overlay (alpha 0.5) | error map, above a legend of the
    classes present in either map. The image is drawn as the loader gave it: uint8 (N, 3, H, W) RGB, before
    normalisation. It adds nothing to the result."""

    def __init__(self, out_dir: str, alpha: float = 0.5) -> None:
        self.out_dir, self.alpha = out_dir, alpha

    def reset(self, ctx: PassContext) -> None:
        self.image_paths = ctx.named_files("drawing panels")[0]
        self.labels = ctx.labels
        os.makedirs(self.out_dir, exist_ok=True)

    def process(self, batch: Batch) -> None:
        if batch.images.dtype != torch.uint8:
            raise InputError(f"show_dir draws the loader's uint8 RGB images; got {batch.images.dtype} images (a "
                             f"dataset that normalises its own images cannot be drawn: yield uint8 and a .normalize)")
        if batch.targets is None or batch.indices is None:
            raise InputError("drawing panels needs targets and a loader that does not shuffle")
        for j, index in enumerate(batch.indices):
            panel = self.panel(batch.images[j], batch.preds[j], batch.targets[j])
            name = os.path.splitext(os.path.basename(self.image_paths[index]))[0]
            write_rgb(os.path.join(self.out_dir, f"{name}_show.png"), panel)

    def panel(self, image: torch.Tensor, pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
        """The RGB panel of one uint8 (3, H, W) image with its (H, W) prediction and target."""
        rgb = image.permute(1, 2, 0).cpu().numpy()
        p, t = pred.cpu().numpy(), target.cpu().numpy()
        top = np.concatenate([titled(rgb, "image"), titled(colorize(t, self.labels), "ground truth")], 1)
        bottom = np.concatenate([titled(overlay(rgb, p, self.labels, self.alpha), "prediction"),
                                 titled(error_map(p, t, self.labels.ignore_index), "errors (red)")], 1)
        present = np.union1d(np.unique(p), np.unique(t))
        classes = [int(c) for c in present if c < self.labels.num_classes]
        return np.concatenate([top, bottom, legend(classes, self.labels, top.shape[1])], 0)

    def evaluate(self) -> EvaluationResult:
        return EvaluationResult()
