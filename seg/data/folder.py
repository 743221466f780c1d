"""Datasets as plain folders of images and masks, matched by relative path (mmsegmentation's CustomDataset).

    ROOT/<img_dir>/**/<name><img_suffix>     e.g. images/train/a/0001.jpg
    ROOT/<ann_dir>/**/<name><mask_suffix>    e.g. masks/train/a/0001.png

``{split}`` in ``img_dir`` / ``ann_dir`` / ``split_list`` stands for the split name, so ADE20K's
``images/training`` + ``annotations/training`` and Pascal VOC's shared ``JPEGImages`` + ``SegmentationClass``
with ``ImageSets/Segmentation/{split}.txt`` lists are described without renaming anything. Masks hold class
indices (greyscale or palette-index PNGs); see :func:`seg.data.labels.folder_decoder` for what the values mean.
"""
from __future__ import annotations

import os

import numpy as np

from .io import JPEG_MASK_HARM, LOSSLESS_MASK_SUFFIXES, DataError, pair_files
from .labels import IGNORE_INDEX, LabelDecoder, LabelSpace, default_palette, folder_decoder

SPLIT_FIELD = "{split}"


def _split_path(cfg: dict, key: str, split: str) -> str:
    return os.path.join(cfg["root"], cfg[key].replace(SPLIT_FIELD, split))


def _files(folder: str, suffix: str) -> dict[str, str]:
    """{relative path minus suffix: path} of the files under ``folder`` (recursively) ending in ``suffix``."""
    out = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            if name.endswith(suffix):
                path = os.path.join(parent, name)
                out[os.path.relpath(path, folder)[:-len(suffix)]] = path
    return out


def check_mask_suffix(cfg: dict) -> None:
    """DataError unless ``data.mask_suffix`` names a lossless format (the decoders check each file's content)."""
    suffix = cfg["mask_suffix"]
    if not suffix.lower().endswith(LOSSLESS_MASK_SUFFIXES):
        raise DataError(f"data.mask_suffix: {suffix!r} is no lossless image format; masks must end in one of "
                        f"{list(LOSSLESS_MASK_SUFFIXES)} ({JPEG_MASK_HARM})")


def folder_pairs(cfg: dict, split: str) -> list[tuple[str, str]]:
    """Sorted (image, mask) paths of ``split``; DataError naming the folder or file on a missing folder, an
    image without mask, a mask without image, a split-list entry without its files, or a lossy mask suffix."""
    check_mask_suffix(cfg)
    img_dir, ann_dir = _split_path(cfg, "img_dir", split), _split_path(cfg, "ann_dir", split)
    for key, folder in (("img_dir", img_dir), ("ann_dir", ann_dir)):
        if not os.path.isdir(folder):
            raise DataError(f"{folder}: folder of split '{split}' not found (data.root + data.{key}={cfg[key]!r})")
    img_sfx, mask_sfx = cfg["img_suffix"], cfg["mask_suffix"]
    if cfg["split_list"]:
        list_path = _split_path(cfg, "split_list", split)
        try:
            with open(list_path) as f:
                names = [line.strip() for line in f if line.strip()]
        except OSError as e:
            raise DataError(f"{list_path}: cannot read the split list of '{split}' (data.split_list): {e}") from e
        pairs = [(os.path.join(img_dir, n + img_sfx), os.path.join(ann_dir, n + mask_sfx)) for n in names]
        for name, pair in zip(names, pairs):
            for path in pair:
                if not os.path.isfile(path):
                    raise DataError(f"{list_path}: lists {name!r} but {path} does not exist")
        if not pairs:
            raise DataError(f"{list_path}: split list of '{split}' is empty")
        return pairs
    images, masks = _files(img_dir, img_sfx), _files(ann_dir, mask_sfx)
    if not images:
        raise DataError(f"{img_dir}: no *{img_sfx} images of split '{split}' (data.img_suffix={img_sfx!r})")
    counted = f"file(s) of split '{split}'"
    return pair_files(images, masks, (img_dir, img_sfx), (ann_dir, mask_sfx), "mask", (counted, counted))


def folder_label_space(cfg: dict) -> LabelSpace:
    """Class names, palette (default_palette when null) and ignore value of a folder dataset; DataError
    naming the data key on an inconsistent setting (a lossy data.mask_suffix too: this runs when a config loads)."""
    check_mask_suffix(cfg)
    names = cfg["class_names"]
    if not names:
        raise DataError("data.class_names: data.format=folder needs the list of class names (its length is the "
                        "number of classes)")
    n = len(names)
    if n > IGNORE_INDEX:
        raise DataError(f"data.class_names: at most {IGNORE_INDEX} classes fit 8-bit masks, got {n}")
    if cfg["palette"] is None:
        palette = default_palette(n)
    else:
        palette = np.asarray(cfg["palette"])
        if palette.shape != (n, 3) or palette.dtype.kind not in "iu" or palette.min() < 0 or palette.max() > 255:
            raise DataError(f"data.palette: expected {n} [r, g, b] entries of 0-255 (one per data.class_names "
                            f"entry), got shape {palette.shape}")
        palette = palette.astype(np.uint8)
    ignore = cfg["ignore_index"]
    if not n <= ignore <= IGNORE_INDEX:
        raise DataError(f"data.ignore_index: must lie in {n}..{IGNORE_INDEX} (outside the class indices 0-{n - 1}), "
                        f"got {ignore}")
    for raw, cls in (cfg["label_map"] or {}).items():
        if not (0 <= raw <= 255 and (0 <= cls < n or cls == ignore)):
            raise DataError(f"data.label_map: entry {raw}: {cls} must map a mask value 0-255 to a class 0-{n - 1} "
                            f"or data.ignore_index {ignore}")
    return LabelSpace(tuple(names), palette, IGNORE_INDEX, None)


def folder_label_decoder(cfg: dict) -> LabelDecoder:
    space = folder_label_space(cfg)
    return folder_decoder(space.num_classes, cfg["ignore_index"], cfg["reduce_zero_label"], cfg["label_map"])
