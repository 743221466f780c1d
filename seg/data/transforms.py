"""Albumentations 2.x pipelines built from the ``data`` config section.

Training runs in three steps so that class-balanced crops can be centred on a chosen pixel:
  1. ``geometric``: random scale, then pad to at least the crop size (image 0, mask 255), carrying the
     crop centre along as a keypoint;
  2. the crop window itself (``crop_window``), centred on that keypoint or uniformly random;
  3. ``photometric``: horizontal flip, Gaussian blur, colour jitter, to a uint8 (3, H, W) tensor.
Normalisation is not part of any worker pipeline: :class:`BatchNormalize` runs it on the device, for
training crops, full-size evaluation images and seg.evaluation.predict's images alike, so workers hand
over uint8 images (a quarter of float32's bytes through the inter-process pipe and the host-to-device
copy), the float arithmetic runs on the GPU, and every path feeds the network the same bits.
"""
from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

from seg.errors import InputError

from .labels import IGNORE_INDEX


def build_geometric(crop_size: int, scale_range: tuple[float, float]) -> A.Compose:
    """Random scale in ``scale_range`` (bilinear image, nearest mask) and pad to >= crop_size."""
    lo, hi = scale_range
    return A.Compose(
        [
            A.RandomScale(scale_limit=(lo - 1.0, hi - 1.0), interpolation=cv2.INTER_LINEAR,
                          mask_interpolation=cv2.INTER_NEAREST, p=1.0),
            A.PadIfNeeded(min_height=crop_size, min_width=crop_size, position="random",
                          border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE_INDEX),
        ],
        keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
    )


def build_photometric(hflip: float, blur_prob: float, color_jitter: float,
                      hue_jitter: float | None = None) -> A.Compose:
    """Flip / blur / colour jitter (each skipped when its probability or strength is 0), then a uint8
    (3, H, W) tensor (normalised later, on the device, by :class:`BatchNormalize`). Brightness, contrast and
    saturation scale by U(1 - color_jitter, 1 + color_jitter); the hue shifts by U(-h, h) of the hue circle,
    h = hue_jitter, or color_jitter / 10 when it is None (this toolkit's milder default)."""
    ops = []
    if hflip > 0:
        ops.append(A.HorizontalFlip(p=hflip))
    if blur_prob > 0:
        # sigma range as in NVIDIA's semantic-segmentation RandomGaussianBlur (0.15 + U(0, 1.15))
        ops.append(A.GaussianBlur(blur_limit=0, sigma_limit=(0.15, 1.3), p=blur_prob))
    j = color_jitter
    h = j / 10 if hue_jitter is None else hue_jitter
    if j > 0 or h > 0:
        ops.append(A.ColorJitter(brightness=(1 - j, 1 + j), contrast=(1 - j, 1 + j),
                                 saturation=(1 - j, 1 + j), hue=(-h, h), p=1.0))
    return A.Compose(ops + [ToTensorV2()])


def to_tensor_ops() -> list:
    """uint8 HWC RGB -> uint8 (3, H, W) tensor (a view: no copy in the worker); mask stays as is. The
    image is normalised later, on the device, by :class:`BatchNormalize`."""
    return [ToTensorV2()]


CROP_PLACEMENTS = ("centred", "anywhere")


def crop_window(height: int, width: int, crop: int, center: tuple[float, float] | None,
                rng: np.random.Generator, placement: str = "centred") -> tuple[int, int]:
    """Top-left (y0, x0) of a ``crop`` x ``crop`` window inside an image of at least that size.

    With ``center`` (x, y) and ``placement`` "centred" the window is centred on it; with "anywhere" the
    point lands at a uniformly drawn position inside the window (NVIDIA's class-uniform crops), so a
    class-balanced crop can hold its class at the crop border too. The window is then shifted, if
    needed, to stay inside the image, which keeps the point inside it. Without ``center`` the window
    is uniform.
    """
    if center is None:
        return int(rng.integers(0, height - crop + 1)), int(rng.integers(0, width - crop + 1))
    if placement not in CROP_PLACEMENTS:
        raise InputError(f"data.crop_placement must be one of {list(CROP_PLACEMENTS)}, got {placement!r}")
    cx = int(np.clip(round(center[0]), 0, width - 1))
    cy = int(np.clip(round(center[1]), 0, height - 1))
    if placement == "centred":
        dy, dx = crop // 2, crop // 2
    else:
        dy, dx = int(rng.integers(0, crop)), int(rng.integers(0, crop))
    y0 = min(max(cy - dy, 0), height - crop)
    x0 = min(max(cx - dx, 0), width - crop)
    return y0, x0


class BatchNormalize:
    """``(x / 255 - mean) / std`` for a uint8 (B, 3, H, W) batch, computed on the batch's own device.

    Returns float32 (B, 3, H, W) with the batch's strides; a floating batch is returned unchanged
    (already normalised by its dataset). The one preprocessor of training, evaluation and prediction:
    computed as ``x * (1 / (255 std)) + (-mean / std)`` (float32 constants, two rounded operations) on
    every path, so the same image gives the same network input bit for bit wherever it comes from.
    """

    def __init__(self, mean, std):
        self.scale = [1.0 / (255.0 * s) for s in std]
        self.shift = [-m / s for m, s in zip(mean, std)]
        self._consts: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.is_floating_point():
            return images
        if images.device not in self._consts:
            scale, shift = (torch.tensor(v, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
                            for v in (self.scale, self.shift))
            self._consts[images.device] = scale, shift
        scale, shift = self._consts[images.device]
        # in place on the fresh float copy: no further full-size allocation; same bits as x * scale + shift
        return images.float().mul_(scale).add_(shift)
