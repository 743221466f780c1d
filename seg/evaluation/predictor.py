"""A checkpoint loaded once, segmenting images held in memory: ``seg.load(checkpoint)(image)``.

    predictor = seg.load("work_dirs/run/model_final.pth", device="cpu")
    classes = predictor(rgb)                          # ndarray (H, W, 3) uint8 RGB -> (H, W) class indices
    classes, probs = predictor(rgb, probabilities=True)   # + float32 (C, H, W) softmax
    maps = predictor([rgb, pil_image, "a.jpg"])       # a list in -> a list out

The model, normalisation, label space and inference settings come from the checkpoint's config (as for
``seg.predict``, which loads its checkpoint through this class); every call reuses them.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from seg.config import ConfigError
from seg.data import BatchNormalize
from seg.data.io import DataError, read_image
from seg.data.labels import LabelSpace
from seg.engine.checkpoint import load_checkpoint
from seg.engine.distributed import resolve_device
from seg.engine.speed import prepare_model

from .inference import InferenceSettings, preprocess, to_device
from .runner import labels_for, load_model_for_eval, run_config

__all__ = ["Predictor", "load"]


class Predictor:
    """A segmentation checkpoint ready for inference (see :func:`load` for the arguments).

    ``predictor(images, probabilities=False)`` takes one image or several:
      * one image: an ndarray (H, W, 3) uint8 RGB, a PIL image, a tensor (3, H, W) (uint8, or float in [0, 1],
        quantised to uint8 as a file would be), or a path -> class map (H, W) (uint8, int64 above 256 classes);
      * a batch: an ndarray (N, H, W, 3) or a tensor (N, 3, H, W) -> class maps (N, H, W);
      * a list or tuple of any of these -> a list of the results, in order.
    With ``probabilities=True`` each class map comes as ``(classes, probs)``, probs float32 (C, H, W) (or
    (N, C, H, W) for a batch): the softmax of the logits under the inference settings (tiles, scales, flip).

    Attributes: ``model`` (eval mode, on ``device``), ``device``, ``labels`` (:class:`~seg.data.labels.LabelSpace`:
    class names, palette), ``settings`` (:class:`InferenceSettings`), ``config`` (the run's config).
    """

    def __init__(self, checkpoint: str, *, device: str | torch.device | None = None, config: str | None = None,
                 opts: Iterable[str] = (), padding_mode: str | None = None, **settings: Any):
        self.checkpoint = str(checkpoint)
        self.device = resolve_device("auto" if device is None else device, "device")
        ckpt = load_checkpoint(self.checkpoint)
        self.config = run_config(self.checkpoint, config, opts, loaded=ckpt)
        model, info = load_model_for_eval(self.config, self.checkpoint, padding_mode, self.device, loaded=ckpt)
        del ckpt
        train_cfg = self.config["train"]
        self.model = prepare_model(model, self.device, train_cfg["channels_last"], train_cfg["compile"])
        self.labels: LabelSpace = labels_for(self.config["data"], info["num_classes"], self.checkpoint)
        self.settings = InferenceSettings.from_config(self.config["eval"], **settings)
        self.normalize = BatchNormalize(self.config["data"]["mean"], self.config["data"]["std"])

    def __call__(self, images: Any, probabilities: bool = False) -> Any:
        if isinstance(images, (list, tuple)):
            return [self(image, probabilities) for image in images]
        batch = _as_uint8_batch(images)
        results = [self.segment(image, probabilities, label=_name(images, i)) for i, image in enumerate(batch)]
        if _is_batch(images):
            if probabilities:
                return (np.stack([c for c, _ in results]), np.stack([p for _, p in results]))
            return np.stack(results)
        return results[0]

    def logits(self, image: torch.Tensor, label: str = "image") -> torch.Tensor:
        """Logits (1, C, H, W) of one uint8 (3, H, W) RGB image under ``settings``; DataError naming ``label`` for
        an image the settings cannot run (e.g. smaller than a tile)."""
        (batch,) = to_device((image,), self.device)
        try:
            with torch.inference_mode():
                return self.settings.predict(self.model, preprocess(batch, self.normalize))
        except ConfigError as err:
            raise DataError(f"{label}: {err}") from err

    def segment(self, image: torch.Tensor, probabilities: bool = False, label: str = "image") -> Any:
        """Class map (H, W) of one uint8 (3, H, W) image, with its probabilities (C, H, W) when asked."""
        logits = self.logits(image, label)[0]
        dtype = torch.uint8 if logits.shape[0] <= 256 else torch.int64
        classes = logits.max(0).indices.to(dtype).cpu().numpy()
        if not probabilities:
            return classes
        return classes, logits.float().softmax(0).cpu().numpy()

    def read(self, path: str) -> tuple[np.ndarray, np.ndarray]:
        """(RGB uint8 (H, W, 3), class map (H, W)) of the image file ``path``."""
        rgb = read_image(path)
        return rgb, self.segment(torch.from_numpy(rgb).permute(2, 0, 1), label=path)


def load(checkpoint: str, device: str | torch.device | None = None, **kwargs: Any) -> Predictor:
    """Load ``checkpoint`` once for in-memory inference: :class:`Predictor`.

    Args:
        device: "cpu", "cuda", "cuda:1", ...; None / "auto" = the GPU when present.
        config, opts: a YAML config to use instead of the checkpoint's own, and ``key=value`` overrides.
        padding_mode: run the weights under this padding (seg.nn.convert_padding); None = as trained.
        mode, tile_size, overlap, scales, flip: inference settings; None = the config's ``eval`` section.
    Raises:
        CheckpointError / ConfigError naming the checkpoint.
    """
    return Predictor(checkpoint, device=device, **kwargs)


def _is_batch(images: Any) -> bool:
    return isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4


def _name(images: Any, index: int) -> str:
    if isinstance(images, (str, os.PathLike)):
        return str(images)
    return f"image {index}" if _is_batch(images) else "image"


def _as_uint8_batch(image: Any) -> Sequence[torch.Tensor]:
    """One input (not a list) -> uint8 (3, H, W) tensors on the CPU; DataError for anything else."""
    if isinstance(image, (str, os.PathLike)):
        return [torch.from_numpy(read_image(str(image))).permute(2, 0, 1)]
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image (PIL is not imported for it)
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim not in (3, 4) or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise DataError(f"an ndarray image must be uint8 RGB (H, W, 3) or a batch (N, H, W, 3); got "
                            f"{image.dtype} {image.shape}")
        batch = torch.from_numpy(np.require(image, requirements=["C", "W"])).movedim(-1, -3)
        return list(batch) if batch.ndim == 4 else [batch]
    if isinstance(image, torch.Tensor):
        if image.ndim not in (3, 4) or image.shape[-3] != 3:
            raise DataError(f"a tensor image must be (3, H, W) or a batch (N, 3, H, W); got {tuple(image.shape)}")
        if image.is_floating_point():
            image = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
        elif image.dtype != torch.uint8:
            raise DataError(f"a tensor image must be uint8 or float in [0, 1]; got {image.dtype}")
        return list(image.cpu()) if image.ndim == 4 else [image.cpu()]
    raise DataError(f"cannot segment a {type(image).__name__}: expected an ndarray, a PIL image, a tensor, a path "
                    "or a list of these")
