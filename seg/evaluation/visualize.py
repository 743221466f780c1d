"""Cityscapes-palette overlays and error maps for qualitative inspection (``--show-dir``)."""
from __future__ import annotations

import functools
import os
from typing import Sequence

import cv2
import numpy as np
import torch

__all__ = ["cityscapes_palette", "colorize", "error_map", "OverlayWriter"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@functools.lru_cache(maxsize=1)
def cityscapes_palette() -> np.ndarray:
    """uint8 (256, 3) RGB colour per trainId (Cityscapes colours for 0-18, black elsewhere)."""
    from cityscapesscripts.helpers.labels import trainId2label
    palette = np.zeros((256, 3), dtype=np.uint8)
    for tid in range(19):
        palette[tid] = trainId2label[tid].color
    return palette


def colorize(label: np.ndarray) -> np.ndarray:
    """(H, W) trainIds -> (H, W, 3) uint8 RGB."""
    return cityscapes_palette()[label.astype(np.int64) & 255]


def error_map(pred: np.ndarray, target: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """(H, W, 3) uint8 RGB: green correct, red wrong, black ignored."""
    out = np.zeros(pred.shape + (3,), dtype=np.uint8)
    valid = target != ignore_index
    out[valid & (pred == target)] = (0, 160, 0)
    out[valid & (pred != target)] = (230, 30, 30)
    return out


def _denormalise(image: torch.Tensor, mean, std) -> np.ndarray:
    mean = torch.tensor(mean or IMAGENET_MEAN, dtype=image.dtype, device=image.device)[:, None, None]
    std = torch.tensor(std or IMAGENET_STD, dtype=image.dtype, device=image.device)[:, None, None]
    rgb = ((image * std + mean).clamp(0, 1) * 255).round().byte()
    return rgb.permute(1, 2, 0).cpu().numpy()


class OverlayWriter:
    """Writes ``<dir>/<stem>_show.png`` per image: a 2x2 panel of image | ground truth (palette) over
    prediction overlay (alpha 0.5) | error map."""

    def __init__(self, out_dir: str, image_paths: Sequence[str], indices: Sequence[int], mean=None, std=None,
                 alpha: float = 0.5) -> None:
        os.makedirs(out_dir, exist_ok=True)
        self.out_dir, self.image_paths, self.indices = out_dir, image_paths, indices
        self.mean, self.std, self.alpha = mean, std, alpha

    def __call__(self, position: int, image: torch.Tensor, pred: torch.Tensor, target: torch.Tensor) -> None:
        for j in range(pred.shape[0]):
            rgb = _denormalise(image[j], self.mean, self.std)
            p, t = pred[j].cpu().numpy(), target[j].cpu().numpy()
            overlay = (self.alpha * colorize(p) + (1 - self.alpha) * rgb).astype(np.uint8)
            panel = np.concatenate([np.concatenate([rgb, colorize(t)], 1),
                                    np.concatenate([overlay, error_map(p, t)], 1)], 0)
            name = os.path.splitext(os.path.basename(self.image_paths[self.indices[position + j]]))[0]
            path = os.path.join(self.out_dir, f"{name}_show.png")
            if not cv2.imwrite(path, cv2.cvtColor(panel, cv2.COLOR_RGB2BGR)):
                raise OSError(f"could not write {path}")
