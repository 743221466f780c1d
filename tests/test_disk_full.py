"""A full disk (issue 25, cases 10-11): every write says "no space left on device" and names the file it was
writing, never its temporary name nor torch's "unexpected pos"; the file that was there stays as it was.

The full disk is simulated for one folder: `open` for writing there opens /dev/full instead, whose every
write fails with ENOSPC as a full file system's does (or, for "create", the file cannot even be created)."""
import builtins
import errno
import glob
import importlib.util
import os
import shutil

import numpy as np
import pytest
import torch
from conftest import save_demo_checkpoint
from PIL import Image

from seg.atomic import atomic_open, atomic_write_json
from seg.cli import run_tool
from seg.data.labels import LabelSpace
from seg.engine.logger import RunLogger
from seg.evaluation.plots import save_confusion_figure
from seg.evaluation.result import write_json
from seg.evaluation.stats import save_image_stats
from seg.evaluation.visualize import write_png

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fill_disk(monkeypatch, folder, on: str = "write") -> None:
    """From now on, writing a file below `folder` fails with ENOSPC: on its first write ("write": the file
    is /dev/full) or when it is created ("create", as when the file system has no free inode)."""
    real_open = builtins.open

    def fake_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and str(file).startswith(str(folder)) and set(mode) & set("wax"):
            if on == "create":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
            return real_open("/dev/full", mode.replace("x", "w"), *args, **kwargs)
        return real_open(file, mode, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", fake_open)


@pytest.fixture(params=["write", "create"])
def full_disk(request, tmp_path, monkeypatch):
    """A folder on a "full disk" (see fill_disk)."""
    folder = tmp_path / "full"
    folder.mkdir()
    fill_disk(monkeypatch, folder, request.param)
    return folder


def assert_names_target(err: OSError, path) -> None:
    assert err.errno == errno.ENOSPC and err.filename == str(path), (err.errno, err.filename)
    assert "no space left on device" in str(err).lower() and ".tmp" not in str(err)


def test_atomic_write_names_the_target_and_keeps_the_old_file(full_disk):
    path = full_disk / "results.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)  # the old file, written while there was room (os.open: no fake)
    os.write(fd, b'{"old": 1}')
    os.close(fd)
    with pytest.raises(OSError) as caught:
        atomic_write_json({"new": 2}, str(path))
    assert_names_target(caught.value, path)
    with os.fdopen(os.open(path, os.O_RDONLY)) as f:
        assert f.read() == '{"old": 1}'
    assert os.listdir(full_disk) == ["results.json"]


def test_torch_save_on_a_full_disk_says_no_space_not_unexpected_pos(full_disk):
    path = full_disk / "weights.pth"
    with pytest.raises(OSError) as caught:  # torch turns the write's ENOSPC into RuntimeError("unexpected pos")
        with atomic_open(str(path), "wb") as f:
            torch.save({"w": torch.zeros(100_000)}, f)
    assert_names_target(caught.value, path)
    assert not glob.glob(str(full_disk / "*"))


def test_torch_short_write_without_an_os_error_is_reported_as_a_full_disk(tmp_path, monkeypatch):
    def short_write(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed; unexpected pos 64 vs 0")
    monkeypatch.setattr(torch, "save", short_write)
    path = tmp_path / "w.pth"
    with pytest.raises(OSError) as caught:
        with atomic_open(str(path), "wb") as f:
            torch.save({}, f)
    assert_names_target(caught.value, path)
    assert os.listdir(tmp_path) == []


def test_eval_outputs_on_a_full_disk_name_their_files(full_disk):
    labels = LabelSpace(("x", "y"), np.array([[0, 0, 0], [255, 255, 255]], np.uint8))
    writers = {
        "eval.json": lambda p: write_json({"mIoU": 1.0}, p),
        "eval.images.npz": lambda p: save_image_stats({"intersection": np.ones((1, 1, 2)), "prediction": np.ones(
            (1, 1, 2)), "ground_truth": np.ones((1, 1, 2)), "regions": ["all"], "images": ["a"],
            "class_names": ["x", "y"]}, p),
        "eval_confusion.png": lambda p: save_confusion_figure([[5, 1], [2, 7]], labels, p),
        "pred/a_pred.png": lambda p: write_png(p, np.zeros((4, 4), np.uint8)),  # --save-pred, predict's masks
    }
    for name, write in writers.items():
        path = full_disk / name
        with pytest.raises(OSError) as caught:
            write(str(path))
        assert_names_target(caught.value, path)
    assert not glob.glob(str(full_disk / "**" / "*.*"), recursive=True)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_demo_checkpoint(tmp_path_factory.mktemp("export_run") / "model_final.pth")


@pytest.mark.parametrize("full_disk", ["write"], indirect=True)
def test_export_onto_a_full_disk_is_one_line(checkpoint, full_disk, capsys):
    out = full_disk / "model.pth"  # ONNX goes through the same atomic_open (its exporter takes 15 s)
    assert run_tool(load_tool("export").main, [checkpoint, "--format", "weights", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: {out}: no space left on device"
    assert not os.path.exists(out)


@pytest.mark.parametrize("full_disk", ["write"], indirect=True)
def test_prepare_cityscapes_on_a_full_disk_names_the_label_file(demo_root, full_disk, tmp_path, capsys):
    """The labelTrainIds PNG: cv2.imwrite into a temporary name used to fail silently, and the rename after it
    then named the temporary file."""
    shutil.copytree(demo_root, tmp_path / "tree")  # written before the disk is "full" (its folder is a link)
    os.symlink(tmp_path / "tree", full_disk / "tree")
    source = sorted(glob.glob(str(full_disk / "tree" / "gtFine" / "val" / "*" / "*_polygons.json")))[0]
    target = source.replace("_polygons.json", "_labelTrainIds.png")
    os.remove(target)
    assert run_tool(load_tool("prepare_cityscapes").main, [str(full_disk / "tree"), "--workers", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"error: {target}: no space left on device") and err.count("error: ") == 1, err
    assert not glob.glob(target + "*") and not glob.glob(target.replace(".png", ".tmp*"))


def test_training_metrics_on_a_full_disk_name_the_file(tmp_path, monkeypatch):
    logger = RunLogger(str(tmp_path / "wd"), total=2)
    logger.log(1, {"loss": 1.0})
    fill_disk(monkeypatch, tmp_path / "wd")
    with pytest.raises(OSError) as caught:
        logger.log(2, {"loss": 0.5})
    assert_names_target(caught.value, tmp_path / "wd" / "metrics.jsonl")
    monkeypatch.undo()
    logger.close()


@pytest.mark.parametrize("full_disk", ["write"], indirect=True)
def test_predict_onto_a_full_disk_says_why(checkpoint, full_disk, tmp_path, capsys):
    image = tmp_path / "scene.png"
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(image)
    out = full_disk / "pred"
    assert run_tool(load_tool("predict").main, [checkpoint, str(image), "--out", str(out), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"error: {out / 'scene.png'}: no space left on device") and err.count("error: ") == 1, err
