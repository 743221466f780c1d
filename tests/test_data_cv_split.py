"""City-level cross-validation splits (data.cv_split) on a generated tree with the real Cityscapes city names."""
import os

import numpy as np
import pytest
from PIL import Image

from seg.config import ConfigError, load_config
from seg.data import build_train_dataset, build_val_dataset

TRAIN_CITIES = ["aachen", "bochum", "bremen", "cologne", "darmstadt", "dusseldorf", "erfurt", "hamburg", "hanover",
                "jena", "krefeld", "monchengladbach", "strasbourg", "stuttgart", "tubingen", "ulm", "weimar", "zurich"]
VAL_CITIES = ["munster", "frankfurt", "lindau"]  # written unsorted on purpose
EXTRA_CITIES = ["augsburg", "konstanz"]


def _write(root, annotation, split, city, n):
    for i in range(n):
        stem = f"{city}_{i:06d}_000019"
        for sub, name, arr in (("leftImg8bit", f"{stem}_leftImg8bit.png", np.zeros((8, 16, 3), np.uint8)),
                               (annotation, f"{stem}_{annotation}_labelTrainIds.png", np.full((8, 16), 7, np.uint8))):
            os.makedirs(os.path.join(root, sub, split, city), exist_ok=True)
            Image.fromarray(arr).save(os.path.join(root, sub, split, city, name))


@pytest.fixture(scope="module")
def city_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("cities"))
    for k, city in enumerate(TRAIN_CITIES):
        _write(root, "gtFine", "train", city, 1 + k % 2)
    for city in VAL_CITIES:
        _write(root, "gtFine", "val", city, 2)
    for city in EXTRA_CITIES:
        _write(root, "gtCoarse", "train_extra", city, 1)
    return root


def _cities(ds):
    return sorted({os.path.basename(os.path.dirname(p)) for p in ds.image_paths})


def _cfg(root, k, **kw):
    return {"root": root, "cv_split": k, "crop_size": 8, "class_balance": 0.0, **kw}


# the held-out cities, written out by hand from NVIDIA's rule (sorted val + sorted train, start k * 21 // 3)
HELD_OUT = {0: ["frankfurt", "lindau", "munster"], 1: ["darmstadt", "dusseldorf", "erfurt"],
            2: ["monchengladbach", "strasbourg", "stuttgart"]}


@pytest.mark.parametrize("k", [0, 1, 2])
def test_cv_split_validates_on_three_cities_and_trains_on_the_other_eighteen(city_root, k):
    val = build_val_dataset(_cfg(city_root, k))
    train = build_train_dataset(_cfg(city_root, k), seed=0)
    assert _cities(val) == HELD_OUT[k]
    all_cities = sorted(TRAIN_CITIES + VAL_CITIES)
    assert _cities(train) == sorted(set(all_cities) - set(HELD_OUT[k]))
    # images of both official splits pooled by city: every image of a city goes with it
    n_images = {c: 1 + i % 2 for i, c in enumerate(TRAIN_CITIES)} | {c: 2 for c in VAL_CITIES}
    assert len(val) == sum(n_images[c] for c in HELD_OUT[k])
    assert len(train) == sum(n_images.values()) - len(val)
    assert not set(val.image_paths) & set(train.image_paths)


def test_cv_split_leaves_train_extra_whole_and_does_not_duplicate(city_root):
    train = build_train_dataset(_cfg(city_root, 1, train_sets=["fine/train", "fine/val", "coarse/train_extra"]), 0)
    assert len(train.image_paths) == len(set(train.image_paths))
    coarse = [p for p in train.label_paths if "gtCoarse" in p]
    assert sorted({os.path.basename(os.path.dirname(p)) for p in coarse}) == EXTRA_CITIES
    assert "frankfurt" in _cities(train) and "erfurt" not in _cities(train)


def test_cv_split_is_validated():
    with pytest.raises(ConfigError, match="cv_split"):
        load_config(None, ["data.cv_split=3"])
