"""Every kind of bad input gives an error naming the file (dataset and prep tool), never a silent skip."""
import glob
import json
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from seg.cli import run_tool
from seg.data import DataError, build_train_dataset, build_val_dataset
from seg.data.prepare import prepare_cityscapes


@pytest.fixture
def root(demo_root, tmp_path):
    """A private, writable copy of the demo set."""
    dst = str(tmp_path / "cs")
    shutil.copytree(demo_root, dst, ignore=shutil.ignore_patterns(".cache"))
    return dst


def _val_pair(root, k=0):
    img = sorted(glob.glob(os.path.join(root, "leftImg8bit", "val", "*", "*.png")))[k]
    lbl = img.replace("leftImg8bit", "gtFine", 1).replace("_leftImg8bit.png", "_gtFine_labelTrainIds.png")
    return img, lbl


def test_missing_root_names_path_and_how_to_get_cityscapes(tmp_path):
    missing = str(tmp_path / "nowhere")
    # the datasets name the config key to fix (a DataError), the preparation tool its argument
    for build, error in ((lambda: build_val_dataset({"root": missing}), DataError),
                         (lambda: build_train_dataset({"root": missing}, 0), DataError),
                         (lambda: prepare_cityscapes(missing), FileNotFoundError)):
        with pytest.raises(error, match="nowhere.*cityscapes-dataset.com"):
            build()


def test_missing_split_folder_names_expected_path(root):
    with pytest.raises(FileNotFoundError, match=r"leftImg8bit/test.*cityscapes-dataset.com"):
        build_val_dataset({"root": root}, split="test")
    expected = r"folder not found: expected \S*/gtCoarse/train\. .*cityscapes-dataset.com"
    with pytest.raises(FileNotFoundError, match=expected):
        build_train_dataset({"root": root, "train_sets": ["coarse/train"]}, 0)


def test_image_without_label(root):
    img, lbl = _val_pair(root)
    os.remove(lbl)
    with pytest.raises(DataError, match=rf"{re.escape(img)}: image has no label"):
        build_val_dataset({"root": root})


def test_label_without_image(root):
    img, lbl = _val_pair(root)
    os.remove(img)
    with pytest.raises(DataError, match=rf"{re.escape(lbl)}: label has no image"):
        build_val_dataset({"root": root})


def test_size_mismatch(root):
    _, lbl = _val_pair(root)
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(lbl)
    with pytest.raises(DataError, match=rf"{re.escape(lbl)}: label size 64x32 differs from image"):
        build_val_dataset({"root": root})


def _damage_middle(path):
    """Invert 64 bytes in the middle of a file: header and IEND trailer intact, pixel data corrupt."""
    data = bytearray(open(path, "rb").read())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(b ^ 0xFF for b in data[mid:mid + 64])
    open(path, "wb").write(bytes(data))


@pytest.mark.parametrize("which", [0, 1])
def test_truncated_png_is_found_when_the_set_is_built(root, which):
    path = _val_pair(root)[which]
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"{re.escape(path)}: truncated PNG"):
        build_val_dataset({"root": root})


@pytest.mark.parametrize("which", [0, 1])
def test_corrupt_png_data(root, which):
    path = _val_pair(root)[which]
    _damage_middle(path)
    ds = build_val_dataset({"root": root})  # header and trailer are intact: found when decoding
    with pytest.raises(DataError, match=rf"{re.escape(path)}: cannot decode"):
        ds[0]


def test_corrupt_png_header(root):
    _, lbl = _val_pair(root)
    open(lbl, "wb").write(b"this is no png at all")
    with pytest.raises(DataError, match=rf"{re.escape(lbl)}: not a PNG"):
        build_val_dataset({"root": root})


def test_label_values_that_are_no_cityscapes_ids(root):
    _, lbl = _val_pair(root)
    arr = np.asarray(Image.open(lbl)).copy()
    arr[0, 0] = 40
    Image.fromarray(arr).save(lbl)
    ds = build_val_dataset({"root": root})
    with pytest.raises(DataError, match=rf"{re.escape(lbl)}: label values \[40\] are no Cityscapes trainId"):
        ds[0]


# ------------------------------------------------------------------ prep tool
def _drop_train_ids(root):
    for p in glob.glob(os.path.join(root, "gt*", "*", "*", "*_labelTrainIds.png")):
        os.remove(p)


def test_prepare_recreates_train_ids_and_skips_existing(root, demo_root):
    _drop_train_ids(root)
    # one label only as labelIds (no JSON): converted through the id -> trainId table
    json_only = sorted(glob.glob(os.path.join(root, "gtFine", "train", "*", "*_polygons.json")))[0]
    os.remove(json_only)
    summary = prepare_cityscapes(root, verify=True)
    assert summary["created"] == 13 and summary["existing"] == 0
    assert summary["pairs"] == {"gtFine/train": 6, "gtFine/val": 4, "gtCoarse/train_extra": 3}
    for p in glob.glob(os.path.join(demo_root, "gt*", "*", "*", "*_labelTrainIds.png")):
        mine = os.path.join(root, os.path.relpath(p, demo_root))
        assert (np.asarray(Image.open(mine)) == np.asarray(Image.open(p))).all(), mine
    assert prepare_cityscapes(root)["created"] == 0


def test_prepare_unknown_json_label(root):
    _drop_train_ids(root)
    path = sorted(glob.glob(os.path.join(root, "gtFine", "val", "*", "*_polygons.json")))[0]
    ann = json.load(open(path))
    ann["objects"][0]["label"] = "spaceship"
    json.dump(ann, open(path, "w"))
    with pytest.raises(DataError, match=rf"{re.escape(path)}: label 'spaceship' is no Cityscapes label"):
        prepare_cityscapes(root)


def test_prepare_label_ids_out_of_range(root):
    _drop_train_ids(root)
    path = sorted(glob.glob(os.path.join(root, "gtFine", "val", "*", "*_polygons.json")))[0]
    os.remove(path)
    ids = path.replace("_polygons.json", "_labelIds.png")
    arr = np.asarray(Image.open(ids)).copy()
    arr[3, 3] = 77
    Image.fromarray(arr).save(ids)
    with pytest.raises(DataError, match=rf"{re.escape(ids)}: label values \[77\] are no Cityscapes id"):
        prepare_cityscapes(root)


def test_prepare_size_mismatch_and_unpaired(root):
    _drop_train_ids(root)
    path = sorted(glob.glob(os.path.join(root, "gtFine", "val", "*", "*_polygons.json")))[0]
    ann = json.load(open(path))
    ann["imgWidth"] = 100
    json.dump(ann, open(path, "w"))
    with pytest.raises(DataError, match=rf"{re.escape(path)}: annotated size 100x64 differs"):
        prepare_cityscapes(root)
    image = path.replace("gtFine", "leftImg8bit", 1).replace("_gtFine_polygons.json", "_leftImg8bit.png")
    os.remove(image)
    with pytest.raises(DataError, match=rf"{re.escape(path)}: label has no image"):
        prepare_cityscapes(root)


def test_prepare_image_without_label(root):
    img, _ = _val_pair(root, 1)
    stem = img.replace("leftImg8bit", "gtFine", 1).replace("_leftImg8bit.png", "_gtFine_")
    for p in glob.glob(stem + "*"):
        os.remove(p)
    with pytest.raises(DataError, match=rf"{re.escape(img)}: image has no label"):
        prepare_cityscapes(root)


def test_prepare_verify_decodes_labels(root):
    _, lbl = _val_pair(root)
    _damage_middle(lbl)
    prepare_cityscapes(root)  # without --verify nothing is decoded
    with pytest.raises(DataError, match=rf"{re.escape(lbl)}: cannot decode"):
        prepare_cityscapes(root, verify=True)


def test_prepare_cli_exit_code_and_message(tmp_path, capsys):
    import importlib.util


    spec = importlib.util.spec_from_file_location("prep", os.path.join(os.path.dirname(__file__), "..", "tools",
                                                                       "prepare_cityscapes.py"))
    prep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prep)
    assert run_tool(prep.main, [str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: dataset root not found") and "missing" in err and "Traceback" not in err
