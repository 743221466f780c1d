"""A tiny procedurally drawn ImageFolder: four classes a small CNN tells apart within seconds on CPU.

Classes (random colours, positions, sizes, periods and noise in every image), told apart by texture,
so a few conv layers and a global average pool suffice:
  checker   a checkerboard (edges in both directions)
  disk      one filled circle (few edges)
  hstripes  horizontal stripes
  vstripes  vertical stripes
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from seg.errors import InputError

__all__ = ["DEMO_CLASSES", "draw_demo_image", "generate_demo_imagefolder"]

DEMO_CLASSES = ("checker", "disk", "hstripes", "vstripes")  # sorted: index = ImageFolder class index


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    fg = rng.uniform(0, 255, 3)
    bg = rng.uniform(0, 255, 3)
    while np.abs(fg - bg).sum() < 150:  # keep the pattern visible
        bg = rng.uniform(0, 255, 3)
    return fg, bg


def draw_demo_image(cls: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One (size, size, 3) uint8 image of class `cls`."""
    fg, bg = _colours(rng)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    if cls == "disk":
        r = rng.uniform(0.2, 0.35) * size
        cy, cx = rng.uniform(r, size - r, 2)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2
    elif cls == "checker":
        period = rng.uniform(0.2, 0.35) * size
        oy, ox = rng.uniform(0, period, 2)
        mask = (((yy + oy) % period) < period / 2) ^ (((xx + ox) % period) < period / 2)
    elif cls in ("hstripes", "vstripes"):
        period = rng.uniform(0.15, 0.3) * size
        coord = yy if cls == "hstripes" else xx
        mask = ((coord + rng.uniform(0, period)) % period) < period / 2
    else:
        raise InputError(f"unknown demo class {cls!r}; expected one of {DEMO_CLASSES}")
    img = np.where(mask[..., None], fg, bg) + rng.normal(0, 8, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def generate_demo_imagefolder(root: str, train_per_class: int = 48, val_per_class: int = 8, size: int = 24,
                              seed: int = 0) -> str:
    """Write ``root/{train,val}/<class>/<n>.png`` for DEMO_CLASSES; returns `root`. Deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for cls in DEMO_CLASSES:
            folder = os.path.join(root, split, cls)
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                Image.fromarray(draw_demo_image(cls, size, rng)).save(os.path.join(folder, f"{i:04d}.png"))
    return root
