"""`tools/prepare_cityscapes.py --check`: what a Cityscapes tree holds against the official counts."""
import glob
import importlib.util
import os
import shutil

import pytest

from seg.cli import run_tool
from seg.data import prepare
from seg.data.prepare import check_readiness

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = {("gtFine", "train"): 6, ("gtFine", "val"): 4, ("gtCoarse", "train_extra"): 3}  # conftest DEMO_COUNTS


def _tool():
    spec = importlib.util.spec_from_file_location("tool_prepare", os.path.join(ROOT, "tools", "prepare_cityscapes.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tree(demo_root, tmp_path):
    root = tmp_path / "cs"
    shutil.copytree(demo_root, root, ignore=shutil.ignore_patterns(".cache"))
    return str(root)


def _row(rows, name):
    return next(r for r in rows if r["set"] == name)


def test_check_against_official_counts_names_missing_images_and_folders(tree):
    rows = check_readiness(tree)
    assert [r["set"] for r in rows] == ["gtFine/train", "gtFine/val", "gtFine/test", "gtCoarse/train_extra"]
    assert [r["expected"] for r in rows] == [2975, 500, 1525, 19998]
    train = _row(rows, "gtFine/train")
    assert (train["images"], train["labels"], train["train_ids"]) == (6, 6, 6)
    assert train["missing"] == [f"2969 of 2975 images missing under {tree}/leftImg8bit/train"]
    test = _row(rows, "gtFine/test")
    assert test["missing"] == [f"no folder {tree}/leftImg8bit/test (from leftImg8bit_trainvaltest.zip)",
                               f"no folder {tree}/gtFine/test (from gtFine_trainvaltest.zip)"]
    assert _row(rows, "gtCoarse/train_extra")["missing"] == [
        f"19995 of 19998 images missing under {tree}/leftImg8bit/train_extra"]


def test_check_names_images_without_label_or_train_ids(tree):
    assert all(not r["missing"] for r in check_readiness(tree, DEMO))
    ids = sorted(glob.glob(os.path.join(tree, "gtFine", "val", "*", "*_labelTrainIds.png")))[0]
    os.remove(ids)
    stem = os.path.join(os.path.basename(os.path.dirname(ids)),
                        os.path.basename(ids)[:-len("_gtFine_labelTrainIds.png")])
    coarse = sorted(glob.glob(os.path.join(tree, "gtCoarse", "train_extra", "*", "*_gtCoarse_*")))
    gone = os.path.basename(coarse[0]).split("_gtCoarse_")[0]
    for p in coarse:
        if os.path.basename(p).startswith(gone + "_"):
            os.remove(p)
    rows = check_readiness(tree, DEMO)
    val, extra = _row(rows, "gtFine/val"), _row(rows, "gtCoarse/train_extra")
    assert (val["images"], val["labels"], val["train_ids"]) == (4, 4, 3)
    assert val["missing"] == [f"1 image(s) without *_gtFine_labelTrainIds.png, e.g. {stem} "
                              f"(run `seg prepare-cityscapes {tree}`)"]
    assert (extra["images"], extra["labels"], extra["train_ids"]) == (3, 2, 2)
    city = os.path.basename(os.path.dirname(coarse[0]))
    assert extra["missing"] == [f"1 image(s) without a gtCoarse label, e.g. {city}/{gone}"]
    assert not _row(rows, "gtFine/train")["missing"]


def test_check_tool_prints_the_table_and_exits_1_when_incomplete(tree, capsys, monkeypatch):
    tool = _tool()
    with pytest.raises(SystemExit) as exit_:
        run_tool(tool.main, ["--check", tree])
    assert exit_.value.code == 1
    out = capsys.readouterr().out
    assert f"{'gtFine/train':<24}{2975:>9}{6:>9}{6:>9}{6:>9}" in out
    assert f"  gtFine/test: no folder {tree}/leftImg8bit/test (from leftImg8bit_trainvaltest.zip)" in out
    monkeypatch.setattr(prepare, "OFFICIAL_COUNTS", DEMO)
    assert run_tool(tool.main, ["--check", tree]) == 0
    assert "ready: every split complete" in capsys.readouterr().out
