"""TensorBoard at each validation of a segmentation run (seg.segmentation.trackers.RunTrackers), read back
from the event files with tensorboard's EventAccumulator."""
import io
import json
import math
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import Dataset

from seg.config import ConfigError
from seg.data import label_space
from seg.engine import seed_everything
from seg.evaluation.visualize import colorize
from seg.segmentation import train
from tests.test_train_engine import CPU, ColourBlobs, TinyNet, tiny_cfg


class Uint8Blobs(Dataset):
    """Two uint8 validation images whose class is the brightest channel; normalised by /255 on the device."""

    def __init__(self, size=12):
        g = torch.Generator().manual_seed(3)
        self.images = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=g)
        self.targets = self.images.argmax(1)

    def normalize(self, images):
        return images.float() / 255

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.targets[i]


NAMES = ("road", "sidewalk", "building")
RESULT = {"mIoU": 40.0, "IoU": [30.0, math.nan, 50.0], "class_names": list(NAMES), "pixels": 288, "num_images": 2,
          "num_classes": 3, "distance_bands": {"results": [{"label": "0-4", "mIoU": 12.5},
                                                           {"label": "4+", "mIoU": math.nan}]}}


def test_validation_logs_classes_bands_counts_and_panels(tmp_path):
    seed_everything(0)
    val_set = Uint8Blobs()
    model = train(tiny_cfg(iterations=4, val_interval=2, val_panels=1), TinyNet(), ColourBlobs(), CPU,
                  str(tmp_path), val_set=val_set, validate=lambda net: dict(RESULT))
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"val/IoU/road", "val/IoU/building", "val/band_mIoU/0-4", "val/count/pixels", "val/count/images",
            "val/mIoU"} <= tags, tags
    assert not {"val/IoU/sidewalk", "val/band_mIoU/4+", "val/pixels", "val/num_images"} & tags  # NaN / moved
    for tag, value in (("val/IoU/road", 30.0), ("val/IoU/building", 50.0), ("val/band_mIoU/0-4", 12.5),
                       ("val/count/pixels", 288)):
        assert [(e.step, e.value) for e in events.Scalars(tag)] == [(2, value), (4, value)], tag
    # the jsonl record keeps the scores, not the counts, once per validation
    val = [r for r in map(json.loads, open(tmp_path / "metrics.jsonl")) if r["tag"] == "val"]
    assert [r["iter"] for r in val] == [2, 4] and "pixels" not in val[0] and val[0]["mIoU"] == 40.0

    assert events.Tags()["images"] == ["val/panel/0"]
    panels = events.Images("val/panel/0")
    assert [p.step for p in panels] == [2, 4]
    drawn = np.asarray(Image.open(io.BytesIO(panels[-1].encoded_image_string)).convert("RGB"))
    # independent of the hook: the final model's prediction and the truth, coloured with the palette
    with torch.no_grad():
        model.eval()
        pred = model(val_set.images[:1].float() / 255).argmax(1)[0].numpy()
    labels = label_space(tiny_cfg()["data"])
    rgb = val_set.images[0].permute(1, 2, 0).numpy()
    size = rgb.shape[0]
    assert drawn.shape == (size, 3 * size, 3)
    assert np.array_equal(drawn[:, :size], rgb)
    assert np.array_equal(drawn[:, size:2 * size], colorize(val_set.targets[0].numpy(), labels))
    expected = (0.5 * labels.palette[pred].astype(np.float64) + 0.5 * rgb).round()
    assert np.abs(drawn[:, 2 * size:].astype(np.float64) - expected).max() <= 1


def test_no_panels_with_val_panels_zero(tmp_path):
    seed_everything(0)
    train(tiny_cfg(iterations=2, val_panels=0), TinyNet(), ColourBlobs(), CPU, str(tmp_path),
          val_set=Uint8Blobs(), validate=lambda net: dict(RESULT))
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert events.Tags()["images"] == [] and "val/IoU/road" in events.Tags()["scalars"]


class FakeMlflow(types.ModuleType):
    """Records the calls seg makes; mlflow itself is an optional extra, not installed for the tests."""

    def __init__(self):
        super().__init__("mlflow")
        self.calls = []
        for name in ("set_tracking_uri", "start_run", "log_params", "log_metrics", "log_artifact", "end_run"):
            setattr(self, name, self.recorder(name))

    def recorder(self, name):
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))


class FakeWandb(types.ModuleType):
    def __init__(self):
        super().__init__("wandb")
        self.calls = []

    def init(self, **kwargs):
        self.calls.append(("init", (), kwargs))
        run = types.SimpleNamespace()
        run.log = lambda metrics, step: self.calls.append(("log", (metrics,), {"step": step}))
        run.save = lambda path, policy: self.calls.append(("save", (path,), {"policy": policy}))
        run.finish = lambda exit_code: self.calls.append(("finish", (), {"exit_code": exit_code}))
        return run


def test_mlflow_gets_params_validations_and_files(tmp_path, monkeypatch):
    fake = FakeMlflow()
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    seed_everything(0)
    train(tiny_cfg(iterations=4, val_interval=2, val_panels=0, trackers="[mlflow]"), TinyNet(), ColourBlobs(),
          CPU, str(tmp_path), val_set=Uint8Blobs(), validate=lambda net: dict(RESULT))
    names = [c[0] for c in fake.calls]
    assert names == ["set_tracking_uri", "start_run", "log_params", "log_metrics", "log_metrics",
                     "log_artifact", "log_artifact", "log_artifact", "end_run"], names
    assert fake.calls[0][1] == ("file:" + str(tmp_path / "mlruns"),)
    params = fake.calls[2][1][0]
    assert params["train.lr"] == "0.05" and params["model.num_classes"] == "3"
    metrics = [(c[1][0], c[2]["step"]) for c in fake.calls if c[0] == "log_metrics"]
    expected = {"val/mIoU": 40.0, "val/IoU/road": 30.0, "val/IoU/building": 50.0, "val/band_mIoU/0-4": 12.5,
                "val/count/pixels": 288, "val/count/images": 2, "val/count/classes": 3}
    assert metrics == [(expected, 2), (expected, 4)]
    assert [c[1][0] for c in fake.calls if c[0] == "log_artifact"] == [
        str(tmp_path / name) for name in ("config.yaml", "run.json", "metrics.jsonl")]
    assert fake.calls[-1][2] == {"status": "FINISHED"}


def test_wandb_runs_offline_and_is_finished_on_a_failure(tmp_path, monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    seed_everything(0)

    def failing(net):
        raise RuntimeError("validation broke")

    with pytest.raises(RuntimeError, match="validation broke"):
        train(tiny_cfg(iterations=4, val_interval=2, trackers="[wandb]"), TinyNet(), ColourBlobs(), CPU,
              str(tmp_path), val_set=Uint8Blobs(), validate=failing)
    assert [c[0] for c in fake.calls] == ["init", "finish"]
    assert fake.calls[0][2]["mode"] == "offline" and fake.calls[0][2]["dir"] == str(tmp_path)
    assert fake.calls[-1][2] == {"exit_code": 1}


@pytest.mark.parametrize("name", ["mlflow", "wandb"])
def test_a_tracker_not_installed_is_one_config_error(tmp_path, monkeypatch, name):
    monkeypatch.setitem(sys.modules, name, None)  # import of it raises ImportError
    with pytest.raises(ConfigError, match=rf"train.trackers: {name} is not installed; pip install "
                                          rf"'partialpad-seg\[{name}\]'"):
        train(tiny_cfg(trackers=f"[{name}]"), TinyNet(), ColourBlobs(), CPU, str(tmp_path))
    assert not (tmp_path / "metrics.jsonl").exists()


def test_an_unknown_tracker_is_refused_by_the_config():
    with pytest.raises(ConfigError, match="train.trackers.*unknown tracker"):
        tiny_cfg(trackers="[neptune]")
