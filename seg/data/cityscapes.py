"""Cityscapes datasets over the official folder layout.

    ROOT/leftImg8bit/{train,val,test,train_extra}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    ROOT/gtFine/{train,val,test}/{city}/{city}_{seq}_{frame}_gtFine_labelTrainIds.png
    ROOT/gtCoarse/{train,train_extra,val}/{city}/{city}_{seq}_{frame}_gtCoarse_labelTrainIds.png

A training set is named "annotation/split": "fine/train", "coarse/train_extra", ... (the folder names
"gtFine/train" work too). Every image must have its label and every label its image.
"""
from __future__ import annotations

import glob
import os

import numpy as np

from seg.errors import ConfigError, MissingFileError

from .io import DataError, pair_files

ANNOTATIONS = {"fine": "gtFine", "coarse": "gtCoarse", "gtFine": "gtFine", "gtCoarse": "gtCoarse"}
IMAGE_SUFFIX = "_leftImg8bit.png"
HOW_TO_GET = (
    "Cityscapes: register at https://www.cityscapes-dataset.com, download leftImg8bit_trainvaltest.zip and "
    "gtFine_trainvaltest.zip (plus leftImg8bit_trainextra.zip / gtCoarse.zip for coarse data), unzip them into "
    "the root and run `seg prepare-cityscapes ROOT`; or generate the synthetic demo set with "
    "`seg make-demo-data --out ROOT`"
)


def parse_set(name: str) -> tuple[str, str]:
    """"fine/train" -> ("gtFine", "train")."""
    parts = name.strip("/").split("/")
    if len(parts) != 2 or parts[0] not in ANNOTATIONS:
        raise ConfigError(f"data set {name!r}: expected 'annotation/split' with annotation in "
                          f"{sorted(set(ANNOTATIONS))}, e.g. 'fine/train' or 'coarse/train_extra'")
    return ANNOTATIONS[parts[0]], parts[1]


def _require_dir(path: str, what: str) -> None:
    if not os.path.isdir(path):
        raise MissingFileError(f"{what} folder not found: expected {path}. {HOW_TO_GET}")


def list_pairs(root: str, annotation: str, split: str, label_type: str = "labelTrainIds") -> list[tuple[str, str]]:
    """Sorted (image, label) paths of one split; raises on a missing folder or an unpaired file."""
    _require_dir(root, "dataset root")
    img_dir = os.path.join(root, "leftImg8bit", split)
    lbl_dir = os.path.join(root, annotation, split)
    _require_dir(img_dir, f"image split '{split}'")
    _require_dir(lbl_dir, f"{annotation} split '{split}'")
    lbl_suffix = f"_{annotation}_{label_type}.png"
    # keys: "<city>/<name>" (glob yields "<dir>/<city>/<name><suffix>")
    images = {p[len(img_dir) + 1:-len(IMAGE_SUFFIX)]: p
              for p in glob.glob(os.path.join(img_dir, "*", "*" + IMAGE_SUFFIX))}
    labels = {p[len(lbl_dir) + 1:-len(lbl_suffix)]: p for p in glob.glob(os.path.join(lbl_dir, "*", "*" + lbl_suffix))}
    if not images:
        raise MissingFileError(f"no *{IMAGE_SUFFIX} under {img_dir}/<city>/. {HOW_TO_GET}")
    return pair_files(images, labels, (img_dir, IMAGE_SUFFIX), (lbl_dir, lbl_suffix), "label", ("image(s)", "label(s)"),
                      f". If the *_polygons.json files exist, run `seg prepare-cityscapes {root}`")


CV_SPLITS = (0, 1, 2)
COARSE_MODES = ("union", "boost")
# NVIDIA's class-uniform coarse boost classes, as trainIds: truck, bus, train, wall, rider, motorcycle, fence
NVIDIA_BOOST_CLASSES = (14, 15, 16, 3, 12, 17, 4)
OFFICIAL_SPLITS = ("train", "val")


def _city_dirs(root: str, split: str) -> list[str]:
    folder = os.path.join(root, "leftImg8bit", split)
    _require_dir(folder, f"image split '{split}'")
    return sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))


# The cities of the official fine train / val splits (what cv_cities finds on a complete tree), so a split's
# held-out cities can be named before the data is there (`seg reproduce`'s plan).
OFFICIAL_CITIES = {
    "train": ("aachen", "bochum", "bremen", "cologne", "darmstadt", "dusseldorf", "erfurt", "hamburg", "hanover",
              "jena", "krefeld", "monchengladbach", "strasbourg", "stuttgart", "tubingen", "ulm", "weimar", "zurich"),
    "val": ("frankfurt", "lindau", "munster"),
}


def cv_cities(root: str, cv_split: int) -> tuple[list[str], list[str]]:
    """(train cities, val cities) of city-level cross-validation split ``cv_split`` (NVIDIA's scheme) for
    the cities found under ``root``; see :func:`split_cities`."""
    return split_cities(_city_dirs(root, "val"), _city_dirs(root, "train"), cv_split)


def split_cities(val: list[str], train: list[str], cv_split: int) -> tuple[list[str], list[str]]:
    """(train cities, val cities) of split ``cv_split`` given the official (val, train) cities.

    All cities = the official val cities (sorted) followed by the sorted official train cities (21 on
    Cityscapes); split k validates on the ``n_val`` cities starting at index ``k * n // 3`` and trains
    on the rest, so split 0 is the official train/val split and split 1 validates on darmstadt,
    dusseldorf and erfurt.
    """
    if cv_split not in CV_SPLITS:
        raise ConfigError(f"data.cv_split must be one of {list(CV_SPLITS)}, got {cv_split!r}")
    val, train = sorted(val), sorted(train)
    cities = val + train
    start = cv_split * len(cities) // 3
    held_out = cities[start:start + len(val)]
    return sorted(set(cities) - set(held_out)), sorted(held_out)


def city_of(path: str) -> str:
    return os.path.basename(os.path.dirname(path))


def cityscapes_pairs(root: str, sets: list[str], cities=None) -> tuple[list[tuple[str, str]], list[str]]:
    """(image, label) pairs of the named sets in order, and the set name of each; with ``cities`` the
    official train and val splits are pooled and only those cities kept (a city-level split)."""
    pairs: list[tuple[str, str]] = []
    set_of: list[str] = []
    seen: set[str] = set()
    for name in sets:
        annotation, split = parse_set(name)
        if cities is not None and split in OFFICIAL_SPLITS:
            found = [p for s in OFFICIAL_SPLITS if os.path.isdir(os.path.join(root, annotation, s))
                     for p in list_pairs(root, annotation, s) if city_of(p[0]) in cities]
            if not found:
                raise DataError(f"data.cv_split: no {annotation} images of cities {sorted(cities)} under {root}")
            found = sorted(p for p in found if p[1] not in seen)  # fine/train and fine/val name the same pool
        else:
            found = list_pairs(root, annotation, split)
        seen.update(lbl for _, lbl in found)
        pairs += found
        set_of += [name] * len(found)
    return pairs, set_of


def cityscapes_train_pairs(cfg: dict) -> tuple[list[tuple[str, str]], np.ndarray]:
    """Pairs of ``data.train_sets`` (within the training cities of ``data.cv_split``) and which are coarse."""
    cities = cv_cities(cfg["root"], cfg["cv_split"])[0] if cfg["cv_split"] else None
    pairs, set_of = cityscapes_pairs(cfg["root"], cfg["train_sets"], cities)
    return pairs, np.array([parse_set(s)[0] == "gtCoarse" for s in set_of], bool)


def cityscapes_eval_pairs(cfg: dict, split: str) -> list[tuple[str, str]]:
    """Pairs of ``split``: "val" means "fine/val"; with ``data.cv_split`` k > 0, "val" and "train" name the
    held-out and the training cities of split k."""
    name = split if "/" in split else f"fine/{split}"
    cities = None
    if cfg["cv_split"] and parse_set(name)[1] in OFFICIAL_SPLITS:
        train_cities, val_cities = cv_cities(cfg["root"], cfg["cv_split"])
        cities = val_cities if parse_set(name)[1] == "val" else train_cities
    return cityscapes_pairs(cfg["root"], [name], cities)[0]
