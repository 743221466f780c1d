"""Cityscapes data: datasets, class-balanced sampling, augmentation, and the synthetic demo set.

Entry points (config section ``data``, see ``DATA_DEFAULTS``):
    build_train_dataset(data_cfg, seed) -> CityscapesTrainDataset   (call .set_epoch(epoch) every epoch)
    build_val_dataset(data_cfg, split=None) -> CityscapesDataset     (.image_paths for prediction files)
"""
from __future__ import annotations

from .cityscapes import (
    COARSE_MODES, CV_SPLITS, NVIDIA_BOOST_CLASSES, CityscapesDataset, CityscapesTrainDataset, cv_cities, list_pairs,
    load_pair, parse_set)
from .io import DataError
from .labels import (
    CLASS_NAMES, ID_TO_TRAINID, IGNORE_INDEX, NUM_CLASSES, PALETTE, TRAINID_TO_ID, ids_to_train_ids, train_ids_to_ids)
from .transforms import CROP_PLACEMENTS, BatchNormalize

DATA_DEFAULTS = {
    "root": "datasets/demo",
    "train_sets": ["fine/train"],
    "val_split": "val",
    "cv_split": 0,
    "crop_size": 896,
    "scale_range": [0.5, 2.0],
    "hflip": 0.5,
    "blur_prob": 0.5,
    "color_jitter": 0.25,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "class_balance": 0.5,
    "centroids_per_class": 32,
    "coarse_mode": "union",
    "coarse_boost_classes": [14, 15, 16, 3, 12, 17, 4],
    "crop_placement": "centred",
    "num_workers": 4,
}


def _with_defaults(data_cfg: dict | None) -> dict:
    cfg = dict(DATA_DEFAULTS)
    cfg.update(data_cfg or {})
    unknown = set(cfg) - set(DATA_DEFAULTS)
    if unknown:
        raise KeyError(f"unknown data config key(s): {sorted(unknown)}; known: {sorted(DATA_DEFAULTS)}")
    return cfg


def build_train_dataset(data_cfg: dict | None, seed: int) -> CityscapesTrainDataset:
    """Training dataset of (image uint8 (3, crop, crop), target int64 (crop, crop)) over ``train_sets``;
    its ``.normalize`` turns a (B, 3, crop, crop) uint8 batch into float32 network input on any device."""
    cfg = _with_defaults(data_cfg)
    cities = cv_cities(cfg["root"], cfg["cv_split"])[0] if cfg["cv_split"] else None
    return CityscapesTrainDataset(
        cfg["root"], cfg["train_sets"], seed=seed, crop_size=cfg["crop_size"], scale_range=cfg["scale_range"],
        hflip=cfg["hflip"], blur_prob=cfg["blur_prob"], color_jitter=cfg["color_jitter"], mean=cfg["mean"],
        std=cfg["std"], class_balance=cfg["class_balance"], centroids_per_class=cfg["centroids_per_class"],
        coarse_mode=cfg["coarse_mode"], coarse_boost_classes=cfg["coarse_boost_classes"],
        crop_placement=cfg["crop_placement"], cities=cities)


def build_val_dataset(data_cfg: dict | None, split: str | None = None) -> CityscapesDataset:
    """Full-size unaugmented dataset of ``split`` (default ``val_split``); "val" means "fine/val".
    With ``cv_split`` k > 0, "val" and "train" name the held-out and the training cities of split k."""
    cfg = _with_defaults(data_cfg)
    split = split or cfg["val_split"]
    if not split:
        raise ValueError("build_val_dataset: no split given and data.val_split is null")
    name = split if "/" in split else f"fine/{split}"
    cities = None
    if cfg["cv_split"] and parse_set(name)[1] in ("train", "val"):
        train_cities, val_cities = cv_cities(cfg["root"], cfg["cv_split"])
        cities = val_cities if parse_set(name)[1] == "val" else train_cities
    return CityscapesDataset(cfg["root"], [name], mean=cfg["mean"], std=cfg["std"], cities=cities)


__all__ = [
    "COARSE_MODES", "CROP_PLACEMENTS", "CV_SPLITS", "NVIDIA_BOOST_CLASSES", "DATA_DEFAULTS", "cv_cities",
    "BatchNormalize", "build_train_dataset", "build_val_dataset", "CityscapesDataset",
    "CityscapesTrainDataset", "DataError", "list_pairs", "load_pair", "parse_set", "CLASS_NAMES", "ID_TO_TRAINID",
    "IGNORE_INDEX", "NUM_CLASSES", "PALETTE", "TRAINID_TO_ID", "ids_to_train_ids", "train_ids_to_ids",
]
