"""Segment images that have no labels: a checkpoint, image files / folders / globs in, class-index PNGs
and colour overlays out.

The checkpoint is loaded once (:class:`seg.evaluation.predictor.Predictor`), then one pass of
:func:`seg.evaluation.evaluator.run_inference` over the image files feeds :class:`SegmentationFiles`, the
evaluator that writes the PNGs. The model and its data
settings (normalisation, label space, inference defaults, ``train.channels_last`` and ``train.compile``) come
from the config stored in the checkpoint, so a checkpoint is all that is needed; ``config`` / ``opts``
override it.
"""
from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from seg.config import ConfigError
from seg.data.io import DataError, read_image
from seg.data.labels import LabelSpace
from seg.errors import InputError

from .evaluator import run_inference
from .evaluators import Batch, PassContext
from .predictor import Predictor
from .result import EvaluationResult
from .visualize import legend, overlay, write_png, write_rgb

__all__ = ["IMAGE_EXTENSIONS", "Prediction", "ImageFiles", "SegmentationFiles", "expand_inputs", "predict"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_GLOB_CHARS = set("*?[")
MASK_SUFFIX, OVERLAY_SUFFIX = ".png", "_overlay.png"  # the files written per image: <name><suffix>
OUTPUT_SUFFIXES = (MASK_SUFFIX, OVERLAY_SUFFIX)


@dataclass
class Prediction:
    """One image's result: the class index per pixel (uint8 (H, W)) and the files written for it
    (None when no output folder was given)."""
    image: str
    classes: np.ndarray
    mask_path: str | None = None
    overlay_path: str | None = None


def expand_inputs(inputs: Iterable[str], exclude: str | None = None) -> list[str]:
    """Image paths from files, folders (searched recursively for IMAGE_EXTENSIONS) and glob patterns, in
    the given order (sorted within a folder or pattern), each path once. Nothing inside the folder
    ``exclude`` (predict's output folder) is taken: a second run must not segment the first one's outputs.
    DataError naming an input that matches nothing, or a file or folder inside ``exclude``."""
    out: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            _refuse_inside(item, exclude, "input folder")
            found = sorted(p for d, dirs, files in os.walk(item) for p in _images_in(d, dirs, files, exclude))
            if not found:
                raise DataError(f"{item}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        elif _GLOB_CHARS & set(item):
            found = sorted(p for p in glob.glob(item, recursive=True)
                           if os.path.isfile(p) and not _inside(p, exclude))
            if not found:
                where = f" outside the output folder {exclude}" if exclude else ""
                raise DataError(f"{item}: no file matches this pattern{where}")
        elif os.path.isfile(item):
            _refuse_inside(item, exclude, "input")
            found = [item]
        else:
            raise DataError(f"{item}: no such file or folder")
        out += found
    return list(dict.fromkeys(out))


def _inside(path: str, folder: str | None) -> bool:
    """Whether ``path`` is ``folder`` or lies below it (symbolic links resolved)."""
    if folder is None:
        return False
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _refuse_inside(item: str, folder: str | None, what: str) -> None:
    if _inside(item, folder):
        raise DataError(f"{what} {item} is inside the output folder {folder}: predictions would be read back as "
                        f"inputs; write them to another folder")


def _images_in(folder: str, dirs: list[str], files: list[str], exclude: str | None) -> list[str]:
    """The image files of one os.walk step; prunes ``exclude`` from ``dirs`` so the walk skips it."""
    dirs[:] = [d for d in dirs if not _inside(os.path.join(folder, d), exclude)]
    return [os.path.join(folder, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]


def _relative_names(paths: list[str]) -> list[str]:
    """Each absolute path below the folders' common folder; when they share nothing but the file system root
    (``a/b.jpg`` beside ``/data/c.jpg``), the shortest trailing parts that tell them apart instead, so that an
    absolute path is never mirrored under the output folder."""
    if not paths:
        return []
    root = os.path.commonpath([os.path.dirname(p) for p in paths])
    if os.path.dirname(root) != root:
        return [os.path.relpath(p, root) for p in paths]
    parts = [p.split(os.sep)[1:] for p in paths]
    for depth in range(1, max(map(len, parts)) + 1):
        tails = [os.path.join(*part[-depth:]) for part in parts]
        if len({t.casefold() for t in tails}) == len(tails):
            return tails
    return tails  # names that differ only in case: refused by the caller


def _output_names(paths: Sequence[str]) -> list[str]:
    """Output name per image: its path below the inputs' common folder, without the extension unless
    another image's files would then collide with its own (``scene.png`` / ``scene.jpg``, or ``road.png``'s
    overlay and ``road_overlay.png``'s mask): those keep their extension (``scene.png.png``). Unique, so no
    image's outputs overwrite another's (compared case-insensitively, as some file systems do)."""
    full = _relative_names([os.path.abspath(p) for p in paths])
    names = [os.path.splitext(f)[0] for f in full]
    while True:  # each pass gives at least one more image its full name; full names never collide
        owners: dict[str, set[int]] = {}
        for i, name in enumerate(names):
            for suffix in OUTPUT_SUFFIXES:
                owners.setdefault((name + suffix).casefold(), set()).add(i)
        collided = [sorted(same) for same in owners.values() if len(same) > 1]
        clash = {i for same in collided for i in same if names[i] != full[i]}
        if not clash and collided:  # full names that differ only in case
            raise DataError(f"{' and '.join(paths[i] for i in collided[0])}: output names would differ only in "
                            f"case, and overwrite each other on some file systems; rename one")
        if not clash:
            return names
        for i in clash:
            names[i] = full[i]


def predict(checkpoint: str, inputs: str | Iterable[str], out_dir: str | None = None, *,
            mode: str | None = None, tile_size: int | None = None, overlap: float | None = None,
            scales: Sequence[float] | None = None, flip: bool | None = None, padding_mode: str | None = None,
            device: str | torch.device | None = None, config: str | None = None, opts: Iterable[str] = (),
            overlays: bool = True, keep: bool | None = None, progress: bool = True) -> list[Prediction]:
    """Segment every image of ``inputs`` (a path, folder or glob, or several) with ``checkpoint``.

    Args:
        mode, tile_size, overlap, scales, flip: inference settings; None = the config's ``eval`` section.
        padding_mode: run the weights under this padding (seg.nn.convert_padding); None = as trained.
        device: "cpu", "cuda", ... ; None = the GPU when present.
        config, opts: a YAML config to use instead of the checkpoint's own, and ``key=value`` overrides.
        out_dir: when given, writes ``<name>.png`` (<name>: the image's path below the inputs' common folder,
            see _output_names; uint8 ids of LabelSpace.to_output_ids: Cityscapes labelIds for Cityscapes, the
            class index otherwise) and, with ``overlays``,
            ``<name>_overlay.png`` (palette over the image, legend of the classes present) per image.
        keep: return the class maps (default: only when nothing is written, to bound memory).
    Returns:
        one :class:`Prediction` per image, in input order (``classes`` is an empty array unless kept).
    Raises:
        DataError naming an input that matches nothing or an image that cannot be read; CheckpointError /
        ConfigError naming the checkpoint.
    """
    paths = expand_inputs([inputs] if isinstance(inputs, str) else inputs, exclude=out_dir)
    keep = out_dir is None if keep is None else keep
    predictor = Predictor(checkpoint, device=device, config=config, opts=opts, padding_mode=padding_mode,
                          mode=mode, tile_size=tile_size, overlap=overlap, scales=scales, flip=flip)
    files = SegmentationFiles(out_dir, _output_names(paths), overlays=overlays, keep=keep)
    loader = DataLoader(ImageFiles(paths), batch_size=None)  # one image per step: sizes may differ
    try:
        run_inference(predictor.model, loader, predictor.settings, [files], device=predictor.device,
                      labels=predictor.labels, normalize=predictor.normalize, progress=progress)
    except ConfigError as err:  # an image the settings cannot run (e.g. smaller than a tile): name it
        raise DataError(f"{paths[len(files.predictions)]}: {err}") from err
    return files.predictions


class ImageFiles(Dataset):
    """Image files as uint8 (3, H, W) RGB tensors, what :func:`run_inference` normalises on the device."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.image_paths = list(paths)

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(read_image(self.image_paths[index])).permute(2, 0, 1)


class SegmentationFiles:
    """Evaluator (seg.evaluation.evaluators) keeping one :class:`Prediction` per image of the pass
    (``predictions``, in pass order) and, with an ``out_dir``, writing ``<out_dir>/<name>.png`` (the label
    space's output ids) and, with ``overlays``, ``<name>_overlay.png`` (palette over the image, legend of the
    classes present); ``names``: the output name of each image, by dataset index. ``keep``: keep the class
    maps in the Predictions (else empty arrays, to bound memory). It adds nothing to the result."""

    def __init__(self, out_dir: str | None, names: Sequence[str], overlays: bool = True, keep: bool = False) -> None:
        self.out_dir, self.names, self.overlays, self.keep = out_dir, names, overlays, keep
        self.predictions: list[Prediction] = []

    def reset(self, ctx: PassContext) -> None:
        self.image_paths = ctx.named_files("writing predictions")[0]
        self.labels = ctx.labels
        self.predictions = []

    def process(self, batch: Batch) -> None:
        if batch.indices is None:
            raise InputError("writing predictions needs a loader that does not shuffle")
        dtype = torch.uint8 if self.labels.num_classes <= 256 else torch.int64
        for j, index in enumerate(batch.indices):
            classes = batch.preds[j].to(dtype).cpu().numpy()
            result = Prediction(self.image_paths[index], classes if self.keep else np.zeros((0, 0), np.uint8))
            if self.out_dir is not None:
                rgb = batch.images[j].permute(1, 2, 0).cpu().numpy()
                result.mask_path, result.overlay_path = _write(self.out_dir, self.names[index], rgb, classes,
                                                               self.labels, self.overlays)
            self.predictions.append(result)

    def evaluate(self) -> EvaluationResult:
        return EvaluationResult()


def _write(out_dir: str, name: str, rgb: np.ndarray, classes: np.ndarray, labels: LabelSpace,
           overlays: bool) -> tuple[str, str | None]:
    base = os.path.join(out_dir, name)
    os.makedirs(os.path.dirname(base), exist_ok=True)
    mask_path = base + MASK_SUFFIX
    write_png(mask_path, labels.to_output_ids(classes))
    if not overlays:
        return mask_path, None
    present = [int(c) for c in np.unique(classes) if c < labels.num_classes]
    panel = np.concatenate([overlay(rgb, classes, labels), legend(present, labels, rgb.shape[1])], 0)
    overlay_path = base + OVERLAY_SUFFIX
    write_rgb(overlay_path, panel)
    return mask_path, overlay_path

