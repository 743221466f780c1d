"""Dataset formats by name (``data.format``): how a format lists the files of a split and what its mask
values mean. A new format is one more entry of FORMATS; the datasets, augmentation and class-balanced
sampling (seg.data.dataset) are shared by all of them."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .cityscapes import cityscapes_eval_pairs, cityscapes_train_pairs
from .folder import folder_label_decoder, folder_label_space, folder_pairs
from .io import DataError
from .labels import CITYSCAPES, CITYSCAPES_DECODER, LabelDecoder, LabelSpace
from .options import with_defaults

Pairs = list[tuple[str, str]]

#: data keys that only the Cityscapes layout reads (city-level splits, coarse annotations)
CITYSCAPES_ONLY_KEYS = ("cv_split", "coarse_mode", "coarse_boost_classes")


@dataclass(frozen=True)
class DataFormat:
    """What a format contributes; every function takes the data section with its defaults filled in."""
    label_space: Callable[[dict], LabelSpace]
    decoder: Callable[[dict], LabelDecoder]
    train_pairs: Callable[[dict], tuple[Pairs, np.ndarray]]  # pairs of data.train_sets, and which are coarse
    eval_pairs: Callable[[dict, str], Pairs]  # pairs of one split


def _folder_train_pairs(cfg: dict) -> tuple[Pairs, np.ndarray]:
    if cfg["cv_split"]:
        raise DataError("data.cv_split: city-level splits exist for data.format=cityscapes only; set it to 0")
    pairs = [p for split in cfg["train_sets"] for p in folder_pairs(cfg, split)]
    return pairs, np.zeros(len(pairs), bool)


def _cityscapes_label_space(cfg: dict) -> LabelSpace:
    if cfg["class_names"] is not None or cfg["palette"] is not None:
        raise DataError("data.class_names / data.palette: data.format=cityscapes names its own 19 classes and "
                        "colours; leave both null")
    return CITYSCAPES


FORMATS: dict[str, DataFormat] = {
    "cityscapes": DataFormat(_cityscapes_label_space, lambda cfg: CITYSCAPES_DECODER, cityscapes_train_pairs,
                             cityscapes_eval_pairs),
    "folder": DataFormat(folder_label_space, folder_label_decoder, _folder_train_pairs, folder_pairs),
}


def shown_data_keys(data_cfg: dict) -> dict:
    """The data section without the keys its format never reads, for what a run writes for people to read
    (config.yaml): a folder data set carries no Cityscapes coarse-image settings."""
    if data_cfg.get("format", "cityscapes") == "cityscapes":
        return dict(data_cfg)
    return {k: v for k, v in data_cfg.items() if k not in CITYSCAPES_ONLY_KEYS}


def data_format(cfg: dict) -> DataFormat:
    """The format ``cfg`` (defaults filled) names; DataError for an unknown name."""
    if cfg["format"] not in FORMATS:
        raise DataError(f"data.format: unknown format {cfg['format']!r}; expected one of {list(FORMATS)}")
    return FORMATS[cfg["format"]]


def label_space(data_cfg: dict | None) -> LabelSpace:
    """What the class indices of the data section's dataset mean: names, palette, ignore value, ids of
    prediction files. DataError naming the key on an inconsistent section."""
    cfg = with_defaults(data_cfg)
    return data_format(cfg).label_space(cfg)
