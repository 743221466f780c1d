"""tools/train.py, tools/eval.py then tools/predict.py on folder-format data: a 3-class plain folder tree and
an ADE20K-layout tree read through the shipped ADE20K config (ResNet-18, 32 px crops, two iterations, CPU)."""
import glob
import importlib.util
import json
import os

import numpy as np
import pytest
import yaml
from folder_trees import write_ade_tree, write_folder_tree
from PIL import Image

pytestmark = pytest.mark.slow  # trains or runs a tool end to end: left out of make test-fast

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["model.encoder=resnet18", "model.pretrained=null", "model.output_stride=16", "train.iterations=2",
         "train.batch_size=2", "train.device=cpu", "train.amp=none", "train.sync_bn=false", "train.warmup_iters=0",
         "train.log_interval=1", "train.ckpt_interval=2", "train.val_interval=2", "data.crop_size=32",
         "data.num_workers=0", "data.scale_range=[1.0, 1.0]"]


def tool(name):
    spec = importlib.util.spec_from_file_location(f"{name}_tool", os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_eval_predict(config, work_dir, opts, num_classes, images):
    """Train, evaluate (leave-out and distance bands scored), then predict the unlabelled `images` folder."""
    train = tool("train")
    train.main([config, "--work-dir", str(work_dir), "--opts", *opts])
    records = [json.loads(line) for line in open(work_dir / "metrics.jsonl")]
    assert [r["iter"] for r in records if r["tag"] == "val"] == [2]
    out = work_dir / "eval.json"
    tool("eval").main([str(work_dir / "model_final.pth"), "--device", "cpu", "--out", str(out),
                       "--opts", "data.num_workers=0"])
    result = json.loads(out.read_text())
    assert 0 <= result["mIoU"] <= 100 and result["num_classes"] == num_classes
    assert len(result["leave_out"]["results"]) > 1 and len(result["distance_bands"]["results"]) > 1
    pred_dir = work_dir / "pred"
    tool("predict").main([str(work_dir / "model_final.pth"), str(images), "--out", str(pred_dir), "--device", "cpu"])
    for path in sorted(glob.glob(os.path.join(images, "**", "*.*"), recursive=True)):
        name = os.path.splitext(os.path.relpath(path, images))[0]
        pred = np.asarray(Image.open(pred_dir / f"{name}.png"))
        assert pred.shape == np.asarray(Image.open(path)).shape[:2] and pred.max() < num_classes, name
        assert (pred_dir / f"{name}_overlay.png").is_file()
    return result


def test_plain_folder_dataset_trains_evaluates_and_predicts(tmp_path, capsys):
    root = tmp_path / "data"
    write_folder_tree(str(root), n=4)
    config = tmp_path / "folder3.yaml"
    config.write_text(yaml.safe_dump({
        "_base_": os.path.join(REPO, "configs", "_base_", "demo_cpu.yaml"),
        "model": {"num_classes": 3},
        "data": {"format": "folder", "root": str(root), "img_suffix": ".png", "train_sets": ["train"],
                 "val_split": "val", "class_names": ["sky", "road", "car"], "class_balance": 0.5}}))
    train_eval_predict(str(config), tmp_path / "run", SMALL, 3, root / "images" / "val")
    # a folder data set shows nothing of Cityscapes' coarse images, in the log or the run's config.yaml
    assert "training crops per epoch: 4\n" in capsys.readouterr().out
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]
    assert not {"cv_split", "coarse_mode", "coarse_boost_classes"} & set(saved), sorted(saved)
    assert saved["class_names"] == ["sky", "road", "car"]


def test_ade20k_layout_with_the_shipped_config(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    write_ade_tree(str(root), n=(4, 2))
    config = os.path.join(REPO, "configs", "ade20k", "deeplabv3plus_r50_partial_512.yaml")
    train_eval_predict(config, tmp_path / "run", SMALL + [f"data.root={root}"], 150, root / "images" / "validation")
