"""Inference on unlabelled images (seg.predict, tools/predict.py) against a model run by hand, and the
checkpoint-config defaults of tools/eval.py / tools/cross_test.py."""
import glob
import importlib.util
import os

import numpy as np
import pytest
import torch
from conftest import save_demo_checkpoint
from PIL import Image

import seg
from seg.cli import run_tool
from seg.config import ConfigError
from seg.data.io import DataError
from seg.evaluation.predict import _output_names, expand_inputs
from seg.evaluation.runner import run_names
from seg.models import build_model
from seg.nn import convert_padding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_demo_checkpoint(tmp_path_factory.mktemp("run_zeros") / "model_final.pth")


def hand_run(checkpoint, path, padding_mode=None):
    """trainIds of `path` from a DeepLabV3+ built and fed by hand (PIL read, numpy normalisation)."""
    ckpt = torch.load(checkpoint, weights_only=False)
    model = build_model(dict(ckpt["config"]["model"], pretrained=None))
    model.load_state_dict(ckpt["model"])
    if padding_mode:
        convert_padding(model, padding_mode)
    x = (np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255 - MEAN) / STD
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(x).permute(2, 0, 1)[None].float())
    return logits[0].argmax(0).numpy()


def label_ids(train_ids):
    from cityscapesscripts.helpers.labels import trainId2label
    return np.vectorize(lambda t: trainId2label[int(t)].id)(train_ids)


def val_images(demo_root):
    return sorted(glob.glob(os.path.join(demo_root, "leftImg8bit", "val", "*", "*.png")))


@pytest.mark.slow
def test_predict_tool_writes_label_ids_and_overlays(demo_root, checkpoint, tmp_path):
    images = val_images(demo_root)
    folder = os.path.dirname(images[0])
    load_tool("predict").main([checkpoint, folder, os.path.join(folder, "*.png"), "--out", str(tmp_path / "out"),
                               "--device", "cpu"])
    for path in images[:2]:
        stem = os.path.splitext(os.path.basename(path))[0]
        written = np.asarray(Image.open(tmp_path / "out" / f"{stem}.png"))
        assert written.dtype == np.uint8
        np.testing.assert_array_equal(written, label_ids(hand_run(checkpoint, path)))
        over = Image.open(tmp_path / "out" / f"{stem}_overlay.png")
        assert over.size[0] == 128 and over.size[1] > 64  # the image plus a legend strip below it


@pytest.mark.slow
def test_predict_api_keeps_classes_and_converts_padding(demo_root, checkpoint):
    path = val_images(demo_root)[0]
    (result,) = seg.predict(checkpoint, path, padding_mode="partial", device="cpu", progress=False)
    np.testing.assert_array_equal(result.classes, hand_run(checkpoint, path, "partial"))
    assert result.mask_path is None


def test_predict_names_unreadable_and_missing_inputs(checkpoint, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    assert run_tool(load_tool("predict").main, [checkpoint, str(bad), "--out", str(tmp_path / "o"),
                                                "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert err.startswith("error: ") and "broken.png" in err
    with pytest.raises(DataError, match="nothing_here"):
        seg.predict(checkpoint, str(tmp_path / "nothing_here" / "*.jpg"), device="cpu")


def test_run_names_tell_apart_runs_with_the_same_file_name():
    paths = ["/w/run_a/model_final.pth", "/w/run_b/checkpoints/model_final.pth", "/w/run_c/iter_10.pth",
             "/w/run_c/iter_20.pth"]
    assert run_names(paths) == ["run_a", "run_b", "run_c/iter_10.pth", "run_c/iter_20.pth"]


# ---------------------------------------------------------------- issue 25, case 8: names, output folder
def random_images(folder, names, seed=0):
    """Distinct random 32x64 RGB images saved under `names` in `folder` (format from the extension)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)).save(folder / name)
    return [str(folder / name) for name in names]


@pytest.mark.slow
def test_images_whose_names_collide_keep_their_extension_and_lose_nothing(checkpoint, tmp_path):
    paths = random_images(tmp_path / "in", ["scene.png", "scene.jpg", "road.png", "road_overlay.png", "x.png"])
    results = load_tool("predict").main([checkpoint, str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                                         "--device", "cpu"])
    want = {"scene.png": "scene.png", "scene.jpg": "scene.jpg", "road.png": "road.png",
            "road_overlay.png": "road_overlay.png", "x.png": "x"}  # the extension kept only where names collide
    assert {os.path.basename(r.image): os.path.basename(r.mask_path) for r in results} == {
        image: f"{name}.png" for image, name in want.items()}
    written = sorted(os.listdir(tmp_path / "out"))
    assert written == sorted(f"{name}{suffix}" for name in want.values() for suffix in (".png", "_overlay.png"))
    for path in (paths[0], paths[3]):  # files that another image's outputs used to overwrite hold their own image's
        mask = np.asarray(Image.open(tmp_path / "out" / f"{want[os.path.basename(path)]}.png"))
        np.testing.assert_array_equal(mask, label_ids(hand_run(checkpoint, path)))


@pytest.mark.slow
def test_output_folder_inside_an_input_folder_is_never_read_back(checkpoint, tmp_path, capsys):
    images = random_images(tmp_path / "imgs", ["a.png"])
    out = tmp_path / "imgs" / "pred"
    tool = load_tool("predict")
    # the later runs find the first one's PNG in imgs/pred/ (through the folder and through a glob): not read
    for inputs in (tmp_path / "imgs", tmp_path / "imgs", tmp_path / "imgs" / "**" / "*.png"):
        results = tool.main([checkpoint, str(inputs), "--out", str(out), "--device", "cpu", "--no-overlay"])
        assert [r.image for r in results] == images
    assert os.listdir(out) == ["a.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(out / "a.png")), label_ids(hand_run(checkpoint, images[0])))
    for inputs, bad_out, what in ((tmp_path / "imgs", tmp_path / "imgs", "input folder"),
                                  (out / "a.png", out, "input")):
        assert run_tool(tool.main, [checkpoint, str(inputs), "--out", str(bad_out), "--device", "cpu"]) == 1
        err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bars
        assert err == (f"error: {what} {inputs} is inside the output folder {bad_out}: predictions would be read "
                       "back as inputs; write them to another folder"), err


def test_output_names_are_unique_and_keep_the_extension_only_on_a_collision():
    """The naming rule alone (no model): stems that collide, across extensions or with the overlay suffix, keep
    their extension; images of one name in different folders keep their folder."""
    names = _output_names(["/d/scene.png", "/d/scene.jpg", "/d/road.png", "/d/road_overlay.png", "/d/x.png",
                           "/d/a/y.png", "/d/b/y.png"])
    assert names == ["scene.png", "scene.jpg", "road.png", "road_overlay.png", "x", "a/y", "b/y"]
    files = [n + suffix for n in names for suffix in (".png", "_overlay.png")]
    assert len(set(files)) == len(files)
    with pytest.raises(DataError, match="differ only in case"):
        _output_names(["/d/Scene.png", "/d/scene.png"])


def test_inputs_skip_the_output_folder(tmp_path):
    images = random_images(tmp_path / "imgs", ["a.png", "b.png"])
    random_images(tmp_path / "imgs" / "pred", ["a.png", "a_overlay.png"])  # a previous run's outputs
    out = str(tmp_path / "imgs" / "pred")
    assert expand_inputs([str(tmp_path / "imgs")], exclude=out) == images
    assert expand_inputs([str(tmp_path / "imgs" / "**" / "*.png")], exclude=out) == images
    with pytest.raises(DataError, match="no file matches this pattern outside the output folder"):
        expand_inputs([os.path.join(out, "*.png")], exclude=out)


def test_predict_api_refuses_an_unknown_device_in_one_line(tmp_path):
    (image,) = random_images(tmp_path, ["a.png"])
    with pytest.raises(ConfigError, match=r"device: expected auto, cpu, cuda or cuda:N, got 'gpu0'"):
        seg.predict(str(tmp_path / "unused.pth"), image, device="gpu0")  # refused before the checkpoint is read


def test_output_names_never_mirror_an_absolute_path():
    """Images sharing only the file system root (a relative path beside an absolute one) are named by the
    shortest trailing parts that tell them apart, not by their whole path below the root."""
    names = _output_names([os.path.join(os.getcwd(), "a", "b.jpg"), "/abs/path/c.jpg"])
    assert names == ["b", "c"]
    # one depth for all: the shortest that tells every image apart
    assert _output_names(["/p/x/img.png", "/q/y/img.png", "/q/z.png"]) == ["x/img", "y/img", "q/z"]
    assert _output_names(["/p/x/img.png", "/q/x/img.png"]) == ["p/x/img", "q/x/img"]
    assert _output_names(["/data/city/a.png", "/data/town/b.png"]) == ["city/a", "town/b"]  # common folder /data
