"""The synthetic Cityscapes-format demo set (generated once per session by the ``demo_root`` fixture)."""
import filecmp
import glob
import os

import numpy as np
import pytest
from cityscapesscripts.preparation.json2labelImg import json2labelImg
from PIL import Image

from seg.data.demo import make_sample
from seg.data.labels import ID_TO_TRAINID

H, W = 64, 128


def _gt_prefixes(root, annotation, split):
    return sorted(p[: -len("polygons.json")]
                  for p in glob.glob(os.path.join(root, annotation, split, "*", f"*_{annotation}_polygons.json")))


def _read(path):
    return np.asarray(Image.open(path))


@pytest.mark.parametrize("annotation,split,count", [("gtFine", "train", 6), ("gtFine", "val", 4),
                                                     ("gtCoarse", "train_extra", 3)])
def test_layout_and_labels_are_json2labelimg_output(demo_root, tmp_path, annotation, split, count):
    prefixes = _gt_prefixes(demo_root, annotation, split)
    assert len(prefixes) == count
    for prefix in prefixes:
        city, name = prefix.split(os.sep)[-2:]
        image = os.path.join(demo_root, "leftImg8bit", split, city, name.replace(f"_{annotation}_", "_leftImg8bit.png"))
        assert _read(image).shape == (H, W, 3)
        for encoding, suffix in (("ids", "labelIds"), ("trainIds", "labelTrainIds"), ("color", "color")):
            ref = str(tmp_path / f"{suffix}.png")
            json2labelImg(prefix + "polygons.json", ref, encoding)
            assert (_read(ref) == _read(prefix + suffix + ".png")).all(), prefix + suffix
        # the shipped trainIds agree with cityscapesscripts' id table applied to the labelIds
        assert (ID_TO_TRAINID[_read(prefix + "labelIds.png")] == _read(prefix + "labelTrainIds.png")).all()


def _train_ids(root, annotation="gtFine"):
    return [_read(p) for p in sorted(glob.glob(os.path.join(root, annotation, "*", "*", "*_labelTrainIds.png")))]


def test_at_least_eight_classes_and_objects_crossing_borders(demo_root):
    labels = _train_ids(demo_root)
    present = set(np.unique(np.concatenate([lbl.ravel() for lbl in labels])).tolist()) - {255}
    assert len(present) >= 8, present
    # things (pole, sign, light, vegetation, person, car, ...) cut by the left or right image border
    things = {5, 6, 7, 8, 11, 12, 13, 14, 15, 16, 17, 18}
    cut = set()
    for lbl in labels:
        cut |= set(np.unique(np.concatenate([lbl[:, 0], lbl[:, -1], lbl[0]])).tolist()) & things
    print('classes cut by the border:', sorted(cut))
    assert len(cut) >= 2, cut


def test_colour_alone_does_not_decide_the_class(demo_root):
    """Even the best colour -> class table fit on these very pixels (16 levels per channel) stays far from
    right, because colours overlap between classes and textures add noise."""
    xs, ys = [], []
    for lbl_path in sorted(glob.glob(os.path.join(demo_root, "gtFine", "*", "*", "*_labelTrainIds.png"))):
        img_path = lbl_path.replace("gtFine", "leftImg8bit", 1).replace("_gtFine_labelTrainIds", "_leftImg8bit")
        xs.append(_read(img_path).reshape(-1, 3).astype(np.int64) // 16)
        ys.append(_read(lbl_path).ravel())
    x, y = np.concatenate(xs), np.concatenate(ys)
    keep = y != 255
    bins = (x[:, 0] * 256 + x[:, 1] * 16 + x[:, 2])[keep]
    table = np.zeros((4096, 256), np.int64)
    np.add.at(table, (bins, y[keep]), 1)
    best_accuracy = table.max(1).sum() / keep.sum()
    print(f'best colour-only accuracy {best_accuracy:.3f}')
    assert best_accuracy < 0.85, best_accuracy


def test_coarse_labels_leave_parts_unlabelled(demo_root):
    fine = np.mean([(lbl == 255).mean() for lbl in _train_ids(demo_root, "gtFine")])
    coarse = _train_ids(demo_root, "gtCoarse")
    assert all(len(np.unique(lbl)) >= 3 for lbl in coarse)
    assert np.mean([(lbl == 255).mean() for lbl in coarse]) > fine + 0.1


def test_deterministic_for_a_seed(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    make_sample(a, "train", 3, H, W, seed=5)
    make_sample(b, "train", 3, H, W, seed=5)
    make_sample(c, "train", 3, H, W, seed=6)
    files = sorted(os.path.relpath(p, a) for p in glob.glob(os.path.join(a, "**", "*.*"), recursive=True))
    assert len(files) == 5  # image, json, labelIds, labelTrainIds, color
    match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert not mismatch and not errors
    img = files[-1]
    assert img.endswith("_leftImg8bit.png")
    assert not (_read(os.path.join(a, img)) == _read(os.path.join(c, img))).all()


def test_all_19_classes_are_drawn(tmp_path):
    """Every Cityscapes trainId (train and motorcycle included) appears in a modest generated set, so the
    per-class tables of the demo have no permanent holes."""
    for i in range(30):
        make_sample(str(tmp_path), "train", i, H, W, seed=0)
    labels = _train_ids(str(tmp_path))
    present = set(np.unique(np.concatenate([lbl.ravel() for lbl in labels])).tolist()) - {255}
    assert present == set(range(19)), sorted(set(range(19)) - present)
