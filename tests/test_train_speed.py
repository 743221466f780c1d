"""train.channels_last and train.compile (seg.engine.speed): the same checkpoint keys as a plain run, bit-exact
resume, and the same predictions as a network run by hand."""
import os

import numpy as np
import pytest
import torch
from conftest import save_demo_checkpoint
from test_predict import hand_run, val_images
from test_train_engine import CPU, ColourBlobs, TinyNet, tiny_cfg
from torch._dynamo.utils import counters

import seg
import seg.evaluation.predictor as predictor_module  # seg.predict runs on its Predictor
from seg.config import load_config
from seg.engine import seed_everything
from seg.engine.checkpoint import checkpoint_path, load_checkpoint
from seg.engine.speed import prepare_model, use_channels_last
from seg.segmentation import train


def test_channels_last_auto_is_on_for_cuda_only():
    defaults = load_config(None, [])["train"]
    assert defaults["channels_last"] is None and defaults["compile"] == "off"
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert use_channels_last(None, cuda) and not use_channels_last(None, cpu)
    assert use_channels_last(True, cpu) and not use_channels_last(False, cuda)


def test_prepare_model_converts_in_place_and_the_compiled_wrapper_is_not_what_is_saved():
    seed_everything(0)
    model = TinyNet().eval()
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64)
    reference = TinyNet().double().eval()
    reference.load_state_dict(model.state_dict())
    keys = list(model.state_dict())
    run = prepare_model(model, torch.device("cpu"), channels_last=True, compile="eager")
    conv = model.body[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert list(model.state_dict()) == keys  # the module itself keeps its names
    assert run is not model and all(k.startswith("_orig_mod.") for k in run.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(run(x.float()).double(), reference(x), rtol=1e-5, atol=1e-5)


def run(cfg, work_dir, resume=None):
    seed_everything(0)
    return train(cfg, TinyNet(), ColourBlobs(), CPU, str(work_dir), resume=resume)


@pytest.mark.slow
@pytest.mark.parametrize("setting", [{"channels_last": "true"}, {"compile": "eager"}])
def test_speed_settings_keep_checkpoint_keys_and_resume_bit_exactly(tmp_path, setting):
    """Straight 8 iterations vs resumed from the iteration-6 checkpoint, under the setting; the checkpoints hold
    the keys of a plain run's."""
    run(tiny_cfg(iterations=3, ckpt_interval=3), tmp_path / "plain")
    plain_keys = list(load_checkpoint(checkpoint_path(str(tmp_path / "plain"), 3))["model"])
    cfg = tiny_cfg(ckpt_interval=3, **setting)
    torch._dynamo.reset()
    counters.clear()
    full = run(cfg, tmp_path / "full")
    if "channels_last" in setting:
        assert full.body[0].weight.is_contiguous(memory_format=torch.channels_last)
    else:  # the network ran compiled: dynamo captured its graph (train and eval mode: no more)
        assert 1 <= counters["stats"]["unique_graphs"] <= 2, dict(counters["stats"])
    run(cfg, tmp_path / "part")
    os.remove(checkpoint_path(str(tmp_path / "part"), 8))
    assert list(load_checkpoint(checkpoint_path(str(tmp_path / "part"), 6))["model"]) == plain_keys
    resumed = run(cfg, tmp_path / "part", resume="auto")
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert list(load_checkpoint(str(tmp_path / "part" / "model_final.pth"))["model"]) == plain_keys


@pytest.mark.slow
def test_predict_with_channels_last_matches_the_network_run_by_hand(demo_root, tmp_path, monkeypatch):
    prepared = []
    real = predictor_module.prepare_model
    monkeypatch.setattr(predictor_module, "prepare_model", lambda *args: prepared.append(real(*args)) or prepared[-1])
    checkpoint = save_demo_checkpoint(tmp_path / "model_final.pth", ["train.channels_last=true"])
    path = val_images(demo_root)[0]
    (result,) = seg.predict(checkpoint, path, device="cpu", progress=False)
    convs = [p for p in prepared[0].parameters() if p.ndim == 4]
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert not all(p.is_contiguous() for p in convs)
    agree = np.mean(result.classes == hand_run(checkpoint, path))
    assert agree > 0.999, agree  # NHWC kernels sum in another order: an argmax tie may flip
