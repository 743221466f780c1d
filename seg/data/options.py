"""Defaults of the ``data`` config section: the one source of truth for them. seg.config builds its schema
(kinds, choices, docs) on these values, and the dataset builders fill a partial section from them, so a
test or a tool may pass ``{"root": ...}`` alone."""
from __future__ import annotations

from .cityscapes import NVIDIA_BOOST_CLASSES
from .io import DataError
from .labels import IGNORE_INDEX

# ImageNet statistics of RGB in [0, 1]: what ImageNet-pretrained encoders expect
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DATA_DEFAULTS = {
    "format": "cityscapes",
    "root": "datasets/demo",
    "train_sets": ["fine/train"],
    "val_split": "val",
    "cv_split": 0,
    # folder format (seg.data.folder): layout, suffixes and what the mask values mean
    "img_dir": "images/{split}",
    "ann_dir": "masks/{split}",
    "split_list": None,
    "img_suffix": ".jpg",
    "mask_suffix": ".png",
    "class_names": None,
    "palette": None,
    "ignore_index": IGNORE_INDEX,
    "reduce_zero_label": False,
    "label_map": None,
    # training crops and augmentation (every format)
    "crop_size": 896,
    "scale_range": [0.5, 2.0],
    "hflip": 0.5,
    "blur_prob": 0.5,
    "color_jitter": 0.25,
    "hue_jitter": None,
    "mean": list(IMAGENET_MEAN),
    "std": list(IMAGENET_STD),
    "class_balance": 0.5,
    "centroids_per_class": 32,
    "coarse_mode": "union",
    "coarse_boost_classes": list(NVIDIA_BOOST_CLASSES),
    "crop_placement": "centred",
    "num_workers": 4,
}


def with_defaults(data_cfg: dict | None) -> dict:
    """``data_cfg`` over DATA_DEFAULTS; DataError on a key that is no data key."""
    cfg = dict(DATA_DEFAULTS)
    cfg.update(data_cfg or {})
    unknown = sorted(set(cfg) - set(DATA_DEFAULTS))
    if unknown:
        raise DataError(f"data: unknown key(s) {unknown}; known: {sorted(DATA_DEFAULTS)}")
    return cfg
