"""Segmentation data: datasets of several formats, class-balanced sampling, augmentation, the synthetic demo set.

Entry points (config section ``data``, defaults in ``DATA_DEFAULTS``; ``data.format`` picks an entry of
``FORMATS``: the Cityscapes layout, or plain image / mask folders as ADE20K and Pascal VOC ship them):
    build_train_dataset(data_cfg, seed) -> SegTrainDataset   (call .set_epoch(epoch) every epoch)
    build_val_dataset(data_cfg, split=None) -> SegDataset     (.image_paths for prediction files)
    label_space(data_cfg) -> LabelSpace                       (class names, palette, ignore, prediction ids)
"""
from __future__ import annotations

import os

from .cityscapes import (
    COARSE_MODES,
    CV_SPLITS,
    HOW_TO_GET,
    NVIDIA_BOOST_CLASSES,
    OFFICIAL_CITIES,
    cv_cities,
    list_pairs,
    parse_set,
    split_cities,
)
from .dataset import SegDataset, SegTrainDataset, load_pair
from .formats import CITYSCAPES_ONLY_KEYS, FORMATS, data_format, label_space, shown_data_keys
from .io import DataError
from .labels import (
    CITYSCAPES,
    CLASS_NAMES,
    ID_TO_TRAINID,
    IGNORE_INDEX,
    NUM_CLASSES,
    PALETTE,
    TRAINID_TO_ID,
    LabelSpace,
    default_palette,
    ids_to_train_ids,
    train_ids_to_ids,
)
from .options import DATA_DEFAULTS, IMAGENET_MEAN, IMAGENET_STD, with_defaults
from .transforms import CROP_PLACEMENTS, BatchNormalize


def require_root(cfg: dict) -> None:
    """DataError unless ``data.root`` (of a data section with defaults filled) is a folder. The usual cause is
    a relative root read from a config or checkpoint made in another folder, hence the hint."""
    root = cfg["root"]
    if not os.path.isdir(root):
        where = "" if os.path.isabs(root) else f" (relative to {os.getcwd()})"
        how = f"; {HOW_TO_GET}" if cfg["format"] == "cityscapes" else ""
        raise DataError(f"data.root: dataset folder not found: {root}{where}; point at the data with "
                        f"--opts data.root=/path/to/data{how}")


def build_train_dataset(data_cfg: dict | None, seed: int) -> SegTrainDataset:
    """Training dataset of (image uint8 (3, crop, crop), target int64 (crop, crop)) over ``train_sets``;
    its ``.normalize`` turns a (B, 3, crop, crop) uint8 batch into float32 network input on any device."""
    cfg = with_defaults(data_cfg)
    fmt = data_format(cfg)
    require_root(cfg)
    pairs, is_coarse = fmt.train_pairs(cfg)
    return SegTrainDataset(
        pairs, cfg["root"], fmt.decoder(cfg), is_coarse, seed=seed, crop_size=cfg["crop_size"],
        scale_range=cfg["scale_range"], hflip=cfg["hflip"], blur_prob=cfg["blur_prob"],
        color_jitter=cfg["color_jitter"], hue_jitter=cfg["hue_jitter"],
        mean=cfg["mean"], std=cfg["std"], class_balance=cfg["class_balance"],
        centroids_per_class=cfg["centroids_per_class"], coarse_mode=cfg["coarse_mode"],
        coarse_boost_classes=cfg["coarse_boost_classes"], crop_placement=cfg["crop_placement"])


def build_val_dataset(data_cfg: dict | None, split: str | None = None) -> SegDataset:
    """Full-size unaugmented dataset of ``split`` (default ``val_split``): uint8 images, normalised on the
    device by its ``.normalize``. Cityscapes: "val" means "fine/val",
    and with ``cv_split`` k > 0 "val" and "train" name the held-out and the training cities of split k."""
    cfg = with_defaults(data_cfg)
    split = split or cfg["val_split"]
    if not split:
        raise DataError("data.val_split: no split given and data.val_split is null")
    fmt = data_format(cfg)
    require_root(cfg)
    return SegDataset(fmt.eval_pairs(cfg, split), fmt.decoder(cfg), mean=cfg["mean"], std=cfg["std"])


__all__ = [
    "COARSE_MODES", "CROP_PLACEMENTS", "CV_SPLITS", "NVIDIA_BOOST_CLASSES", "DATA_DEFAULTS", "FORMATS", "cv_cities",
    "OFFICIAL_CITIES", "split_cities",
    "CITYSCAPES_ONLY_KEYS", "shown_data_keys", "BatchNormalize", "require_root", "build_train_dataset",
    "build_val_dataset", "data_format", "label_space",
    "with_defaults",
    "SegDataset", "SegTrainDataset", "DataError", "list_pairs", "load_pair", "parse_set", "CITYSCAPES",
    "CLASS_NAMES", "ID_TO_TRAINID", "IGNORE_INDEX", "LabelSpace", "NUM_CLASSES", "PALETTE", "TRAINID_TO_ID",
    "default_palette", "ids_to_train_ids", "train_ids_to_ids", "IMAGENET_MEAN", "IMAGENET_STD",
]
