"""Shared pytest fixtures.

``demo_root`` (session scope): path (str) of a tiny synthetic Cityscapes-format dataset generated once per test
session by ``seg.data.demo.generate_demo_dataset`` into a temporary folder:
    6 train + 4 val images with gtFine (polygons JSON, labelIds, labelTrainIds, color PNGs) and
    3 train_extra images with gtCoarse, all 64x128 (H x W), seed 0 -- about 0.3 s.
Use it as ``data.root``, e.g. ``build_val_dataset({"root": demo_root})`` or
``build_train_dataset({"root": demo_root, "crop_size": 64}, seed=0)``. Treat it as read-only (it is shared);
the class-centroid cache is written to ``<demo_root>/.cache``.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # timm's weights come from caches the tests make, never the hub

import pytest  # noqa: E402
import torch  # noqa: E402

from seg.config import load_config  # noqa: E402
from seg.data.demo import generate_demo_dataset  # noqa: E402
from seg.models import build_model  # noqa: E402

DEMO_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "demo",
                           "deeplabv3plus_r18_zeros.yaml")

DEMO_SIZE = (64, 128)  # (height, width)
DEMO_COUNTS = {"train": 6, "val": 4, "extra": 3}


@pytest.fixture(autouse=True)
def no_weight_downloads(monkeypatch):
    """Tests read pretrained weights only from caches they make (a folder config starts from ImageNet weights
    unless it says model.pretrained: null): a download fails the test that asked for it."""
    def refuse(url, *args, **kwargs):
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("demo_cityscapes")
    generate_demo_dataset(str(root), height=DEMO_SIZE[0], width=DEMO_SIZE[1], seed=0, **DEMO_COUNTS)
    return str(root)


def save_demo_checkpoint(path, opts=()) -> str:
    """A randomly initialised (seed 0) DeepLabV3+ of the demo config with `opts` overrides, saved with its config
    as a model-only checkpoint at `path`; returns str(path)."""
    cfg = load_config(DEMO_CONFIG, list(opts))
    torch.manual_seed(0)
    torch.save({"model": build_model(cfg["model"]).state_dict(), "config": cfg, "meta": {}}, path)
    return str(path)
