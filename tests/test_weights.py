"""model.pretrained / weights= as torchvision, timm and NVIDIA spell them: every test reads files it made itself
into a temporary torchvision or timm cache (nothing is downloaded)."""
from __future__ import annotations

import pytest
import torch
import yaml
from torchvision.models import ResNet18_Weights
from torchvision.models import resnet as tv_resnet

from seg.config import PRETRAINED_BY_FORMAT, load_config
from seg.data import FORMATS
from seg.models import DeepLabV3Plus, PretrainedLoadError, build_model

RESNET18_V1 = "resnet18-f37072fd.pth"  # the file name torchvision gives ResNet18_Weights.IMAGENET1K_V1


def _no_download(*args, **kwargs):
    raise AssertionError("tried to download")


@pytest.fixture
def torchvision_cache(tmp_path, monkeypatch):
    """A TORCH_HOME whose cache holds a random ResNet-18 state dict under IMAGENET1K_V1's file name."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    torch.manual_seed(5)
    state = tv_resnet.resnet18(weights=None).state_dict()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(state, tmp_path / "hub" / "checkpoints" / RESNET18_V1)
    return state


def _assert_encoder_holds(model: DeepLabV3Plus, state: dict) -> None:
    assert model.pretrained_report is not None and model.pretrained_report.missing == []
    for key in ("conv1.weight", "layer4.1.conv2.weight", "layer3.0.bn1.running_var"):
        assert torch.equal(model.encoder.state_dict()[key], state[key]), key


@pytest.mark.parametrize("weights", [ResNet18_Weights.IMAGENET1K_V1, "ResNet18_Weights.IMAGENET1K_V1", "imagenet",
                                     True, "torchvision:ResNet18_Weights.IMAGENET1K_V1"])
def test_builder_weights_as_torchvision_spells_them(torchvision_cache, weights):
    model = DeepLabV3Plus("resnet18", num_classes=3, output_stride=16, weights=weights)
    _assert_encoder_holds(model, torchvision_cache)


def test_config_pretrained_imagenet_and_enum_name(torchvision_cache):
    for spec in ("imagenet", "ResNet18_Weights.IMAGENET1K_V1"):
        model = build_model({"encoder": "resnet18", "num_classes": 3, "output_stride": 16, "pretrained": spec})
        _assert_encoder_holds(model, torchvision_cache)
    # build_model's weights= (an enum member here) takes the place of the section's pretrained
    model = build_model({"encoder": "resnet18", "num_classes": 3, "output_stride": 16, "pretrained": None},
                        weights=ResNet18_Weights.IMAGENET1K_V1)
    _assert_encoder_holds(model, torchvision_cache)


def _folder_config(path, **model) -> str:
    """A folder-data config as a user writes one: no model.pretrained unless given in `model`."""
    path.write_text(yaml.safe_dump({"model": {"encoder": "resnet18", "num_classes": 3, "output_stride": 16, **model},
                                    "data": {"format": "folder", "class_names": ["a", "b", "c"]}}))
    return str(path)


def test_folder_config_starts_from_imagenet_weights_unless_told_otherwise(torchvision_cache, tmp_path):
    assert set(PRETRAINED_BY_FORMAT) == set(FORMATS)
    cfg = load_config(_folder_config(tmp_path / "mine.yaml"))
    assert cfg["model"]["pretrained"] == "imagenet"
    _assert_encoder_holds(build_model(cfg["model"]), torchvision_cache)
    # said explicitly, in the file or on the command line, null stays random init; Cityscapes keeps null
    assert load_config(_folder_config(tmp_path / "null.yaml", pretrained=None))["model"]["pretrained"] is None
    assert load_config(str(tmp_path / "mine.yaml"), ["model.pretrained=null"])["model"]["pretrained"] is None
    assert load_config(None, ["model.encoder=resnet18"])["model"]["pretrained"] is None


def test_offline_without_cached_weights_names_the_cache_and_how_to_run_without(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, dst, progress=True):
        raise OSError("[Errno -3] Temporary failure\nin name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    cfg = load_config(_folder_config(tmp_path / "mine.yaml"))
    with pytest.raises(PretrainedLoadError) as info:
        build_model(cfg["model"])
    message = str(info.value)
    assert "\n" not in message and f"torchvision's cache {tmp_path / 'torch' / 'hub' / 'checkpoints'} " in message
    assert "Temporary failure in name resolution" in message, message
    assert message.endswith("--opts model.pretrained=null"), message
    assert build_model(load_config(str(tmp_path / "mine.yaml"), ["model.pretrained=null"])["model"]
                       ).pretrained_report is None


def test_weights_path_in_nvidia_pdresnet_layout(tmp_path):
    """NVIDIA partialconv's pdresnet checkpoints: torchvision keys under DataParallel's ``module.``, wrapped."""
    torch.manual_seed(6)
    state = tv_resnet.resnet18(weights=None).state_dict()
    path = tmp_path / "pdresnet18.pth"
    torch.save({"epoch": 90, "arch": "pdresnet18", "best_prec1": 70.0,
                "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    for weights in (path, str(path)):
        model = DeepLabV3Plus("resnet18", num_classes=3, output_stride=16, padding_mode="partial", weights=weights)
        _assert_encoder_holds(model, state)


def test_imagenet_for_an_encoder_without_downloadable_weights_says_so():
    with pytest.raises(PretrainedLoadError, match="'wider_resnet38' has no downloadable ImageNet weights; give a "
                                                  "local checkpoint: .*--opts model.pretrained=null$"):
        build_model({"encoder": "wider_resnet38", "pretrained": "imagenet"})
    with pytest.raises(PretrainedLoadError, match="expected 'imagenet', 'timm'"):
        DeepLabV3Plus("resnet18", weights=3.5)  # type: ignore[arg-type]


# -- timm through timm's own cache (the Hugging Face hub cache, pre-populated, offline) --------------------

TIMM_MODEL = "resnet10t"  # default tag c3_in1k, published on the hub as timm/resnet10t.c3_in1k


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    pytest.importorskip("timm")
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


def test_timm_weights_from_timm_cache(offline_hub):
    timm = pytest.importorskip("timm")
    safetensors = pytest.importorskip("safetensors.torch")
    torch.manual_seed(7)
    state = timm.create_model(TIMM_MODEL, pretrained=False).state_dict()
    repo = offline_hub / f"models--timm--{TIMM_MODEL}.c3_in1k"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    safetensors.save_file({k: v.contiguous() for k, v in state.items()},
                          str(repo / "snapshots" / commit / "model.safetensors"))
    for spec in ("timm", "imagenet"):
        model = build_model({"encoder": f"timm/{TIMM_MODEL}", "num_classes": 3, "output_stride": 16,
                             "pretrained": spec})
        own = model.encoder.state_dict()
        for key in ("conv1.0.weight", "layer4.0.conv2.weight", "layer2.0.bn1.running_mean"):
            assert torch.equal(own[f"body.{key}"], state[key]), key


def test_timm_weights_offline_and_not_cached_name_the_cache(offline_hub):
    with pytest.raises(PretrainedLoadError) as info:
        build_model({"encoder": f"timm/{TIMM_MODEL}", "output_stride": 16, "pretrained": "timm"})
    message = str(info.value)
    assert "\n" not in message and str(offline_hub) in message and "resnet10t" in message
    assert message.endswith("--opts model.pretrained=null"), message
