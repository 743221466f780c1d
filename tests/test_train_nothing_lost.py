"""Nothing lost, nothing silently wrong on resume (issue 25, cases 1-4): a finished run is never started over
by --resume auto, pruning after a resume keeps what it wrote, every validation file is checked before
iteration 1 and a failed validation keeps its iteration's checkpoint, a changed model section is refused.
Engine level, on the tiny stand-in network of test_train_engine (a few seconds per run)."""
import glob
import os
import shutil
from pathlib import Path

import cv2
import pytest
from test_train_engine import CPU, ColourBlobs, TinyNet, tiny_cfg
from test_train_runs import bad_label, demo_classes_cfg, metrics, run, snapshot, val_files

import seg.segmentation.criterion as criterion
from seg.config import ConfigError
from seg.data import DataError, build_val_dataset
from seg.engine import CheckpointError, load_checkpoint, seed_everything
from seg.engine.checkpoint import checkpoint_path, list_checkpoints
from seg.errors import WorkDirError
from seg.segmentation import train

pytestmark = pytest.mark.slow  # trains: left out of make test-fast


def cut_short(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 3])


# ---------------------------------------------------------------- case 1: a finished run is not started over
def test_resume_auto_with_no_usable_checkpoint_refuses_to_start_a_finished_run_over(tmp_path):
    run(tiny_cfg(), tmp_path / "wd")  # checkpoints at 4 and 8, best-free, model_final.pth, metrics.jsonl
    for it in (4, 8):
        cut_short(checkpoint_path(str(tmp_path / "wd"), it))
    before = snapshot(tmp_path / "wd")
    with pytest.warns(UserWarning, match="skipping"), \
            pytest.raises(WorkDirError, match=r"nothing to resume from in \S+ \(checkpoint \S+iter_0000008.pth is "
                                              r"truncated or corrupt .*iter_0000004.pth is truncated or corrupt .*\), "
                                              r"but it holds a run \(model_final.pth, metrics.jsonl\) .*--overwrite"):
        run(tiny_cfg(), tmp_path / "wd", resume="auto")
    assert snapshot(tmp_path / "wd") == before
    run(tiny_cfg(iterations=4), tmp_path / "wd", resume="auto", overwrite=True)  # moved aside whole, then afresh
    (old,) = glob.glob(str(tmp_path / "wd.old-*"))
    assert snapshot(old) == before
    run(tiny_cfg(iterations=4), tmp_path / "fresh", resume="auto")  # an empty work dir: nothing to lose, it starts
    assert [r["iter"] for r in metrics(tmp_path / "fresh")] == [2, 4]


def test_resume_auto_starts_over_a_run_killed_before_its_first_checkpoint(tmp_path, capsys):
    """Its records (iterations 2, 4 here) are what the new start writes again: nothing is lost."""
    run(tiny_cfg(iterations=4, ckpt_interval=100), tmp_path)
    os.remove(tmp_path / "model_final.pth")  # as if killed after iteration 4, before any checkpoint
    shutil.rmtree(tmp_path / "checkpoints")
    killed = metrics(tmp_path)
    run(tiny_cfg(iterations=4, ckpt_interval=100), tmp_path, resume="auto")
    assert "starting from scratch" in capsys.readouterr().out
    assert [{k: r[k] for k in ("iter", "loss")} for r in metrics(tmp_path)] == \
        [{k: r[k] for k in ("iter", "loss")} for r in killed]


def test_resume_auto_refuses_when_only_best_pth_is_left(tmp_path):
    seed_everything(0)
    train(tiny_cfg(iterations=4), TinyNet(), ColourBlobs(), CPU, str(tmp_path),
          validate=lambda model: {"mIoU": 1.0, "IoU": [0.5]})
    for name in ("model_final.pth", "metrics.jsonl"):
        os.remove(tmp_path / name)
    os.remove(checkpoint_path(str(tmp_path), 4))
    with pytest.raises(WorkDirError, match=r"\(no periodic checkpoint \(checkpoints/iter_\*.pth\)\), but it holds a "
                                           r"run \(checkpoints/best.pth\)"):
        run(tiny_cfg(), tmp_path, resume="auto")


# ---------------------------------------------------------------- case 2: pruning after a resume
def test_resume_past_damaged_newer_checkpoints_keeps_what_it_writes(tmp_path, capsys):
    cfg = dict(ckpt_interval=2, keep_checkpoints=1)
    run(tiny_cfg(**cfg), tmp_path)  # 8 iterations: iter_0000008.pth left
    damaged = checkpoint_path(str(tmp_path), 20)  # e.g. from a run killed while its disk filled
    shutil.copy(checkpoint_path(str(tmp_path), 8), damaged)
    cut_short(damaged)
    capsys.readouterr()
    with pytest.warns(UserWarning, match=r"skipping checkpoint \S+iter_0000020.pth is truncated"):
        run(tiny_cfg(iterations=12, **cfg), tmp_path, resume="auto")
    assert [it for it, _ in list_checkpoints(str(tmp_path))] == [12]  # once: only the damaged 20 was kept
    assert os.path.isfile(damaged + ".unusable")
    assert f"moved it aside to {damaged}.unusable" in capsys.readouterr().out
    ckpt = load_checkpoint(checkpoint_path(str(tmp_path), 12))
    assert ckpt["iteration"] == 12


# ---------------------------------------------------------------- case 3: validation files and failures
@pytest.fixture
def demo_copy(demo_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(demo_root, root, ignore=shutil.ignore_patterns(".cache"))
    return root


def test_every_val_label_is_checked_before_iteration_1_without_verify(demo_copy, tmp_path, monkeypatch):
    monkeypatch.setattr(criterion, "VERIFY_SAMPLE", 2)  # a training sample of 2; once the validation sample too
    label = bad_label(demo_copy, 1)  # not the first or the last file
    val_set = build_val_dataset({"root": str(demo_copy)})
    seed_everything(0)
    with pytest.raises(DataError, match=f"{label}: label values \\[200\\]"):
        train(demo_classes_cfg(iterations=2), TinyNet(), ColourBlobs(), CPU, str(tmp_path / "wd"), val_set=val_set)
    assert snapshot(tmp_path / "wd") == {}


def test_val_label_beyond_num_classes_in_any_file_fails_before_iteration_1(demo_root, tmp_path, monkeypatch):
    """model.num_classes=18 where one validation file (neither the first nor the last) holds trainId 18."""
    monkeypatch.setattr(criterion, "VERIFY_SAMPLE", 2)
    labels = val_files(Path(demo_root), "*_gtFine_labelTrainIds.png")
    beyond = [path for path in labels if ((lbl := cv2.imread(path, cv2.IMREAD_UNCHANGED)) != 255).any()
              and lbl[lbl != 255].max() >= 18]
    assert len(beyond) == 1 and beyond[0] not in (labels[0], labels[-1]), beyond
    cfg = tiny_cfg(iterations=2)
    cfg["model"]["num_classes"] = 18
    with pytest.raises(DataError, match=f"{beyond[0]}: label values \\[18\\] are outside 0..17 of "
                                        "model.num_classes=18"):
        train(cfg, TinyNet(), ColourBlobs(), CPU, str(tmp_path), val_set=build_val_dataset({"root": demo_root}))
    assert snapshot(tmp_path) == {}


def test_a_failed_validation_keeps_its_iterations_checkpoint(tmp_path, capsys):
    def broken(model):
        raise DataError("val/img_3.png: truncated PNG (it does not end with the IEND chunk)")

    seed_everything(0)
    with pytest.raises(DataError, match="img_3.png: truncated PNG"):
        train(tiny_cfg(val_interval=4), TinyNet(), ColourBlobs(), CPU, str(tmp_path), validate=broken)
    path = checkpoint_path(str(tmp_path), 4)
    assert f"saved {path} before stopping" in capsys.readouterr().out
    assert load_checkpoint(path)["iteration"] == 4
    seed_everything(0)  # the data fixed: the run goes on from iteration 4, not from scratch
    train(tiny_cfg(val_interval=4), TinyNet(), ColourBlobs(), CPU, str(tmp_path), resume="auto",
          validate=lambda model: {"mIoU": 1.0, "IoU": [0.5]})
    assert f"resumed from {path} at iteration 4" in capsys.readouterr().out
    assert [r["iter"] for r in metrics(tmp_path, "val")] == [8]  # the failed one left no record
    assert load_checkpoint(str(tmp_path / "model_final.pth"))["meta"]["iteration"] == 8


# ---------------------------------------------------------------- case 4: the model section of a run
@pytest.mark.parametrize("key, value", [("padding", "partial"), ("output_stride", 16), ("encoder", "resnet18"),
                                        ("num_classes", 5), ("norm", "gn")])
def test_resume_refuses_a_changed_model_section_naming_key_and_values(tmp_path, key, value):
    run(tiny_cfg(iterations=4), tmp_path)
    before = snapshot(tmp_path)
    cfg = tiny_cfg(iterations=8)
    old = cfg["model"][key]
    cfg["model"][key] = value
    path = checkpoint_path(str(tmp_path), 4)
    with pytest.raises(ConfigError, match=rf"cannot resume from {path}: model.{key} is {old!r} there but {value!r} "
                                          rf"here\. .*--opts model.pretrained={path} with another --work-dir"):
        run(cfg, tmp_path, resume="auto")
    assert snapshot(tmp_path) == before


def test_resume_may_change_model_pretrained_but_not_the_weights_shapes(tmp_path):
    run(tiny_cfg(iterations=4), tmp_path)
    cfg = tiny_cfg(iterations=4)
    cfg["model"]["pretrained"] = "torchvision:ResNet18_Weights.IMAGENET1K_V1"  # initial weights: replaced anyway
    run(cfg, tmp_path, resume="auto")
    path = checkpoint_path(str(tmp_path), 4)
    with pytest.raises(CheckpointError, match=rf"checkpoint {path} does not fit this model: Error\(s\) in loading "
                                              r"state_dict .*size mismatch"):
        train(tiny_cfg(iterations=8), TinyNet(num_classes=5), ColourBlobs(), CPU, str(tmp_path), resume="auto")
