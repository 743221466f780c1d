"""Whole-image, tiled and overlapping-tile inference, with optional multi-scale and flip averaging.

Any callable ``model(x: (N, 3, h, w)) -> logits (N, C, h', w')`` works (a dict with key ``"out"`` or a
tuple whose first item is the logits are accepted too); logits of another size are resized
bilinearly to the input size. All averaging is done on logits.

Tiling: tiles are ``tile_size`` x ``tile_size`` squares placed every ``stride`` pixels; the last tile of a
row / column is shifted back to end exactly at the image border (no padding), so it overlaps its
neighbour whenever the side is not a multiple of the stride. Pixels covered by several tiles get the
mean of their logits, using a per-pixel count of shape (H, W). "tile" is therefore stride = tile_size
(overlap only where the border-aligned last tile forces it) and "overlap" is
stride = ceil(tile_size * (1 - overlap)).
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from seg.config import EVAL_MODES, ConfigError
from seg.data.io import DataError
from seg.errors import InputError

__all__ = ["MODES", "InferenceSettings", "check_mode", "check_tile_fits", "tile_starts", "tile_stride", "tile_grid",
           "predict_logits", "forward_logits", "NetworkTimer", "to_device", "preprocess"]

MODES = EVAL_MODES  # the names live with the config schema, which checks eval.mode


def check_mode(mode: str) -> str:
    """``mode`` if it names an inference mode, else a ConfigError listing the names."""
    if mode not in MODES:
        raise ConfigError(f"unknown inference mode {mode!r}; expected one of {MODES}")
    return mode


@dataclass(frozen=True)
class InferenceSettings:
    """How logits are computed for an image: the keyword arguments of :func:`predict_logits`, validated
    once. The config's ``eval`` section and the tools' options use the same names."""
    mode: str = "regular"
    tile_size: int = 1024
    overlap: float = 1 / 3
    stride: int | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    tile_batch: int = 4

    def __post_init__(self) -> None:
        check_mode(self.mode)
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        if self.mode != "regular":
            tile_stride(self.mode, self.tile_size, self.overlap, self.stride)  # fail before any image is read

    @classmethod
    def from_config(cls, eval_cfg: dict, **overrides) -> InferenceSettings:
        """Settings from a config's ``eval`` section (its other keys are ignored), then ``overrides`` that
        are not None (command-line options)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(f"unknown inference setting(s) {unknown}; known: {sorted(names)}")
        values = {k: v for k, v in eval_cfg.items() if k in names}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def as_dict(self) -> dict:
        """JSON-ready copy (scales as a list)."""
        return dict(dataclasses.asdict(self), scales=list(self.scales))

    def predict(self, model: Callable, image: torch.Tensor, forward: Callable | None = None) -> torch.Tensor:
        """:func:`predict_logits` under these settings."""
        return predict_logits(model, image, **dataclasses.asdict(self), forward=forward)


class NetworkTimer:
    """Accumulates the time spent inside the network. On a GPU each call is bracketed by two CUDA events
    (no host sync per call); ``seconds`` waits for the last of them once and sums. On the CPU, wall time."""

    def __init__(self) -> None:
        self.calls = 0
        self._cpu_seconds = 0.0
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    def __call__(self, model: Callable, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if x.is_cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = forward_logits(model, x)
            end.record()
            self._events.append((start, end))
            return out
        t0 = time.perf_counter()
        out = forward_logits(model, x)
        self._cpu_seconds += time.perf_counter() - t0
        return out

    @property
    def seconds(self) -> float:
        """Network seconds so far (on a GPU: waits for the last call to finish)."""
        if self._events:
            self._events[-1][1].synchronize()
        return self._cpu_seconds + sum(start.elapsed_time(end) for start, end in self._events) / 1000.0


def to_device(batch: Sequence[torch.Tensor], device: torch.device | str) -> tuple[torch.Tensor, ...]:
    """A loader's (image (N, 3, H, W), target (N, H, W), ...) or one uncollated sample ((3, H, W), (H, W),
    ...) -> the same tensors batched on ``device``, dtype and strides kept (uint8 images travel as uint8:
    a quarter of float32's bytes), copied without blocking the host (from pinned memory, as
    seg.engine.loaders' eval loader gives on a GPU)."""
    if batch[0].dim() == 3:  # uncollated single sample (build_eval_loader with batch_size 1)
        batch = [t[None] for t in batch]
    return tuple(t.to(device, non_blocking=True) for t in batch)


def preprocess(image: torch.Tensor, normalize: Callable[[torch.Tensor], torch.Tensor] | None) -> torch.Tensor:
    """Network input for a batch on its device: a uint8 (N, 3, H, W) batch through ``normalize`` (the
    dataset's seg.data.BatchNormalize, the same for evaluation, prediction and training); a floating
    batch is taken as already normalised. DataError for uint8 images with no ``normalize``."""
    if image.is_floating_point():
        return image
    if normalize is None:
        raise DataError(f"the loader's dataset yields {image.dtype} images but has no .normalize; pass "
                        f"normalize=seg.data.BatchNormalize(mean, std) to run_inference()")
    return normalize(image)


def forward_logits(model: Callable, x: torch.Tensor) -> torch.Tensor:
    """Run ``model`` on x (N, 3, h, w) and return float logits (N, C, h, w)."""
    out = model(x)
    if isinstance(out, dict):
        out = out["out"]
    elif isinstance(out, (tuple, list)):
        out = out[0]
    if out.dim() != 4 or out.shape[0] != x.shape[0]:
        raise InputError(f"model must return logits (N, C, h, w) for input {tuple(x.shape)}, got {tuple(out.shape)}")
    if out.shape[-2:] != x.shape[-2:]:
        out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return out.float()


def tile_stride(mode: str, tile_size: int, overlap: float = 1 / 3, stride: int | None = None) -> int:
    """Stride between tile origins: tile_size for "tile", the explicit ``stride`` or
    ceil(tile_size * (1 - overlap)) for "overlap"."""
    if mode == "tile":
        if stride is not None and stride != tile_size:
            raise ConfigError(f"stride {stride} given with mode 'tile' (stride = tile size); use mode 'overlap'")
        return tile_size
    if mode != "overlap":
        raise ConfigError(f"unknown inference mode {mode!r}; expected one of {MODES}")
    if stride is None:
        if not 0.0 <= overlap < 1.0:
            raise ConfigError(f"overlap must be a fraction in [0, 1), got {overlap}")
        stride = math.ceil(tile_size * (1.0 - overlap))
    if not 1 <= stride <= tile_size:
        raise ConfigError(f"stride must lie in [1, tile_size={tile_size}], got {stride}")
    return stride


def check_tile_fits(tile_size: int, *sides: int) -> None:
    """ConfigError unless a square tile of ``tile_size`` fits in an image with these sides (height, width, or
    the one side of an axis): tiles are never padded."""
    if tile_size > min(sides):
        raise ConfigError(f"tile size {tile_size} is larger than the image {'x'.join(map(str, sides))}; "
                          f"use a smaller --tile-size or mode 'regular'")


def tile_starts(length: int, tile_size: int, stride: int) -> list[int]:
    """Tile origins along one axis: 0, stride, 2*stride, ... and a last one aligned to the border
    (length - tile_size) so every pixel is covered without padding."""
    check_tile_fits(tile_size, length)
    starts = list(range(0, length - tile_size + 1, stride))
    if starts[-1] != length - tile_size:
        starts.append(length - tile_size)
    return starts


def tile_grid(height: int, width: int, tile_size: int, stride: int) -> list[tuple[int, int]]:
    """All (top, left) tile origins for an image of (height, width), row-major."""
    return [(y, x) for y in tile_starts(height, tile_size, stride) for x in tile_starts(width, tile_size, stride)]


def _tiled_logits(model: Callable, image: torch.Tensor, tile_size: int, stride: int, tile_batch: int,
                  forward: Callable) -> torch.Tensor:
    """Average of tile logits: image (N, 3, H, W) -> logits (N, C, H, W).

    Tiles of all N images are run ``tile_batch`` at a time, so memory is bounded by one batch of tiles
    plus the (N, C, H, W) sum and the (H, W) count.
    """
    n, _, height, width = image.shape
    origins = tile_grid(height, width, tile_size, stride)
    jobs = [(b, y, x) for b in range(n) for (y, x) in origins]
    count = torch.zeros(height, width, device=image.device)
    for y, x in origins:  # the count is shared by the N images: same grid
        count[y:y + tile_size, x:x + tile_size] += 1
    total = None
    for i in range(0, len(jobs), max(1, tile_batch)):
        chunk = jobs[i:i + max(1, tile_batch)]
        crops = torch.stack([image[b, :, y:y + tile_size, x:x + tile_size] for b, y, x in chunk])
        logits = forward(model, crops)
        if total is None:
            total = image.new_zeros(n, logits.shape[1], height, width, dtype=torch.float32)
        for (b, y, x), tile_logits in zip(chunk, logits):
            total[b, :, y:y + tile_size, x:x + tile_size] += tile_logits
    if total is None:  # no tile was run: the grid always has one, so the batch was empty
        raise InputError(f"expected at least one image, got shape {tuple(image.shape)}")
    return total.div_(count)


def _single_scale_logits(model, image, mode, tile_size, stride, tile_batch, forward):
    if mode == "regular":
        return forward(model, image)
    return _tiled_logits(model, image, tile_size, stride, tile_batch, forward)


@torch.inference_mode()
def predict_logits(model: Callable, image: torch.Tensor, mode: str = "regular", tile_size: int = 1024,
                   overlap: float = 1 / 3, stride: int | None = None, scales: Sequence[float] = (1.0,),
                   flip: bool = False, tile_batch: int = 4, forward: Callable | None = None) -> torch.Tensor:
    """Logits for a batch of images under one inference mode.

    Args:
        image: (N, 3, H, W) normalised images.
        mode: "regular" (whole image at once), "tile" or "overlap" (see module docstring).
        scales: the image is resized by each factor (bilinear), inferred with ``mode``, and the logits
            resized back to (H, W); with ``flip`` each scale is also run mirrored. All are averaged.
            Tiles keep ``tile_size`` pixels at every scale, except where a down-scaled image is smaller
            than a tile: there the tile shrinks to the image's shorter side (still square, no padding).
            A tile larger than the image at its own size is an error.
        tile_batch: tiles per forward pass (bounds memory).
        forward: optional ``forward(model, x) -> logits`` hook (e.g. a NetworkTimer).
    Returns:
        float32 logits (N, C, H, W).
    """
    check_mode(mode)
    if image.dim() != 4:
        raise InputError(f"expected images (N, 3, H, W), got shape {tuple(image.shape)}")
    forward = forward or (lambda m, x: forward_logits(m, x))
    step = tile_stride(mode, tile_size, overlap, stride) if mode != "regular" else 0
    height, width = image.shape[-2:]
    if mode != "regular":
        check_tile_fits(tile_size, height, width)
    total, runs = None, 0
    for scale in scales:
        if scale <= 0:
            raise InputError(f"scales must be positive, got {scale}")
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = image if size == (height, width) else F.interpolate(image, size=size, mode="bilinear",
                                                                       align_corners=False)
        tile, tile_step = tile_size, step
        if mode != "regular" and tile_size > min(size):  # a down-scaled image smaller than a tile
            tile = min(size)
            tile_step = tile_stride(mode, tile, overlap, None if stride is None else min(stride, tile))
        for mirrored in ((False, True) if flip else (False,)):
            x = scaled.flip(-1) if mirrored else scaled
            logits = _single_scale_logits(model, x, mode, tile, tile_step, tile_batch, forward)
            if mirrored:
                logits = logits.flip(-1)
            if logits.shape[-2:] != (height, width):
                logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            total = logits if total is None else total + logits
            runs += 1
    if total is None:
        raise InputError("scales must name at least one scale, got none")
    return total if runs == 1 else total / runs
