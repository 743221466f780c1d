"""DeepLabV3+ with ResNet encoders: shapes, torchvision equivalence, padding modes, pretrained loading.

References are independent of seg.models: torchvision's own ResNet modules, ceil-division size
formulas, and key/shape lists written out here.
"""
import copy
import logging
import math

import pytest
import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

from seg.models import DeepLabV3Plus, ModelError, PretrainedLoadError, ResNetEncoder, build_model
from seg.models.pretrained import resolve_pretrained
from seg.models.resnet import dilate_layer
from seg.nn import PADDING_MODES, PartialConv2d, convert_padding

TV_FLAGS = {8: [False, True, True], 16: [False, False, True]}


def ceil_halvings(size: int, times: int) -> int:
    """Size after ``times`` stride-2 layers that pad by k // 2 (each gives ceil(n / 2))."""
    for _ in range(times):
        size = math.ceil(size / 2)
    return size


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so eval-mode BN is not the identity."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
    return model


def torchvision_stages(net: tv_resnet.ResNet, x: torch.Tensor) -> dict:
    out = {"stem": net.relu(net.bn1(net.conv1(x)))}
    x = net.maxpool(out["stem"])
    for name in ("layer1", "layer2", "layer3", "layer4"):
        x = getattr(net, name)(x)
        out[name] = x
    return out


@pytest.fixture(scope="module")
def tv_resnet50_os8(tmp_path_factory):
    """torchvision ResNet-50 at OS 8 with random weights and BN stats, and its state_dict saved to a file."""
    torch.manual_seed(0)
    net = randomize_bn(tv_resnet.resnet50(weights=None, replace_stride_with_dilation=TV_FLAGS[8])).eval()
    path = tmp_path_factory.mktemp("ckpt") / "resnet50_tv.pth"
    torch.save(net.state_dict(), path)
    return net, path


@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("padding", ["zeros", "partial"])
@pytest.mark.slow
def test_resnet50_output_shape_odd_sizes(output_stride, padding):
    model = DeepLabV3Plus("resnet50", num_classes=5, output_stride=output_stride, padding_mode=padding).eval()
    with torch.no_grad():
        for h, w in ((33, 47), (50, 31)):
            assert model(torch.randn(1, 3, h, w)).shape == (1, 5, h, w)


@pytest.mark.slow
def test_resnet18_dilated_stage_sizes_and_shape():
    enc = ResNetEncoder("resnet18", output_stride=8).eval()
    h, w = 37, 51
    with torch.no_grad():
        feats = enc.forward_features(torch.randn(1, 3, h, w))
    expected_halvings = {"stem": 1, "layer1": 2, "layer2": 3, "layer3": 3, "layer4": 3}
    expected_channels = {"stem": 64, "layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}
    for name, halvings in expected_halvings.items():
        assert feats[name].shape == (1, expected_channels[name], ceil_halvings(h, halvings),
                                     ceil_halvings(w, halvings)), name
    assert enc.feature_strides == {name: 2 ** halvings for name, halvings in expected_halvings.items()}
    model = DeepLabV3Plus("resnet18", num_classes=3, output_stride=16, padding_mode="partial").eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, h, w)).shape == (2, 3, h, w)


@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.slow
def test_dilate_layer_reproduces_torchvision_dilation(output_stride):
    ours = tv_resnet.resnet50(weights=None)
    dilation = 1
    for name, flag in zip(("layer2", "layer3", "layer4"), TV_FLAGS[output_stride]):
        if flag:
            dilate_layer(getattr(ours, name), dilation, dilation * 2)
            dilation *= 2
    ref = tv_resnet.resnet50(weights=None, replace_stride_with_dilation=TV_FLAGS[output_stride])
    geometry = [(n, m.stride, m.dilation, m.padding) for n, m in ref.named_modules() if isinstance(m, nn.Conv2d)]
    assert [(n, m.stride, m.dilation, m.padding) for n, m in ours.named_modules()
            if isinstance(m, nn.Conv2d)] == geometry


@pytest.mark.slow
def test_resnet50_trunk_equals_torchvision_layers(tv_resnet50_os8):
    """Zero padding + torchvision checkpoint -> bit-identical stage outputs to torchvision's ResNet-50."""
    net, path = tv_resnet50_os8
    model = build_model({"encoder": "resnet50", "output_stride": 8, "padding": "zeros", "pretrained": str(path)}).eval()
    x = torch.randn(1, 3, 45, 39)
    with torch.no_grad():
        ref = torchvision_stages(net, x)
        ours = model.encoder.forward_features(x)
    for name in ref:
        assert torch.equal(ours[name], ref[name]), name
    assert model.pretrained_report.unexpected == ["fc.weight", "fc.bias"]
    assert model.pretrained_report.missing == []


@pytest.mark.slow
def test_resnet50_os16_trunk_equals_torchvision_layers():
    torch.manual_seed(1)
    net = randomize_bn(tv_resnet.resnet50(weights=None, replace_stride_with_dilation=TV_FLAGS[16])).eval()
    enc = ResNetEncoder("resnet50", output_stride=16).eval()
    enc.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("fc.")})
    x = torch.randn(1, 3, 41, 35)
    with torch.no_grad():
        ref, ours = torchvision_stages(net, x), enc.forward_features(x)
    for name in ref:
        assert torch.equal(ours[name], ref[name]), name


def padded_convs(model: nn.Module):
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and any(p > 0 for p in m.padding)]


@pytest.mark.parametrize("encoder", ["resnet50", "resnet18"])
@pytest.mark.slow
def test_every_padded_conv_follows_the_mode(encoder):
    for mode in PADDING_MODES:
        model = DeepLabV3Plus(encoder, output_stride=8, padding_mode=mode)
        padded = padded_convs(model)
        # stem 7x7 + one 3x3 per block + 3 ASPP branches + 2 decoder convs
        blocks = {"resnet50": 16, "resnet18": 8}[encoder]
        assert len(padded) == 1 + blocks * (2 if encoder == "resnet18" else 1) + 3 + 2
        for name, conv in padded:
            assert isinstance(conv, PartialConv2d) == (mode == "partial"), (mode, name)
            assert conv.padding_mode == mode, (mode, name)
        unpadded = [m for m in model.modules() if isinstance(m, nn.Conv2d) and not any(m.padding)]
        assert unpadded and all(type(m) is nn.Conv2d for m in unpadded)
    rates = [m[0].dilation for m in model.aspp.branches[1:]]
    assert rates == [(12, 12), (24, 24), (36, 36)]


def test_aspp_rates_at_os16():
    model = DeepLabV3Plus("resnet18", output_stride=16, padding_mode="partial")
    assert [(b[0].dilation, b[0].padding, type(b[0])) for b in model.aspp.branches[1:]] == [
        ((r, r), (r, r), PartialConv2d) for r in (6, 12, 18)]


@pytest.mark.slow
def test_state_dict_keys_identical_across_modes_and_norms():
    ref = DeepLabV3Plus("resnet18", padding_mode="zeros").state_dict()
    signature = [(k, v.shape) for k, v in ref.items()]
    for mode in PADDING_MODES[1:]:
        assert [(k, v.shape) for k, v in DeepLabV3Plus("resnet18", padding_mode=mode).state_dict().items()] == signature
    sync = DeepLabV3Plus("resnet18", norm="syncbn")
    assert [(k, v.shape) for k, v in sync.state_dict().items()] == signature
    norms = [m for m in sync.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, nn.SyncBatchNorm) for m in norms)


@pytest.mark.slow
def test_one_set_of_weights_runs_under_every_mode():
    """A zeros-trained model converted by convert_padding == a model built in that mode with the same weights."""
    torch.manual_seed(0)
    trained = randomize_bn(DeepLabV3Plus("resnet18", num_classes=4, output_stride=16, padding_mode="zeros")).eval()
    x = torch.randn(1, 3, 305, 313)  # OS 16 -> 20x20 > 18, so reflect can pad the rate-18 branch
    outputs = {}
    with torch.no_grad():
        for mode in PADDING_MODES:
            built = DeepLabV3Plus("resnet18", num_classes=4, output_stride=16, padding_mode=mode).eval()
            built.load_state_dict(trained.state_dict())
            converted = convert_padding(copy.deepcopy(trained), mode)
            outputs[mode] = built(x)
            assert torch.equal(converted(x), outputs[mode]), mode
        assert torch.equal(convert_padding(trained, "zeros")(x), outputs["zeros"])
    for mode in PADDING_MODES[1:]:
        assert not torch.allclose(outputs[mode], outputs["zeros"]), mode


def test_reflect_too_small_for_aspp_rate_says_so():
    model = DeepLabV3Plus("resnet18", output_stride=8, padding_mode="reflect").eval()
    with pytest.raises(ValueError, match="rate 12 uses reflect padding of 12 px"):
        with torch.no_grad():
            model(torch.randn(1, 3, 64, 64))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown encoder 'resnet9'"):
        DeepLabV3Plus("resnet9")
    with pytest.raises(ValueError, match="output_stride"):
        DeepLabV3Plus("resnet18", output_stride=4)
    with pytest.raises(ValueError, match="unknown padding mode 'circular'"):
        DeepLabV3Plus("resnet18", padding_mode="circular")
    with pytest.raises(ValueError, match="unknown norm 'gn'"):
        DeepLabV3Plus("resnet18", norm="gn")
    with pytest.raises(TypeError, match="pretrained"):  # the constructor reads no weight file; build_model does
        DeepLabV3Plus("resnet18", pretrained="weights.pth")
    with pytest.raises(ModelError, match=r"unknown model config keys \['depth'\]"):
        build_model({"encoder": "resnet18", "depth": 18})


def test_build_model_maps_the_config_section_to_the_constructor():
    """The config's ``padding`` key is the constructor's ``padding_mode``; other keys keep their names."""
    cfg = {"encoder": "resnet18", "num_classes": 4, "output_stride": 16, "padding": "partial", "norm": "bn",
           "pretrained": None}
    torch.manual_seed(0)
    built = build_model(cfg)
    torch.manual_seed(0)
    by_hand = DeepLabV3Plus("resnet18", num_classes=4, output_stride=16, padding_mode="partial", norm="bn")
    assert built.pretrained_report is None
    assert isinstance(built.aspp.branches[1][0], PartialConv2d)
    assert built.decoder.classifier.out_channels == 4 and built.encoder.output_stride == 16
    state, ref = built.state_dict(), by_hand.state_dict()
    assert list(state) == list(ref) and all(torch.equal(state[k], ref[k]) for k in ref)


# -- pretrained loading ----------------------------------------------------------------------------

def test_torchvision_checkpoint_reports_unexpected_and_missing(tmp_path, caplog):
    state = tv_resnet.resnet18(weights=None).state_dict()
    del state["layer2.0.conv1.weight"]
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    with caplog.at_level(logging.WARNING, logger="seg.models.pretrained"):
        model = build_model({"encoder": "resnet18", "pretrained": str(path)})
    report = model.pretrained_report
    assert report.target == "encoder"
    assert report.missing == ["layer2.0.conv1.weight"]
    assert report.unexpected == ["fc.weight", "fc.bias"]
    for key in ("missing key layer2.0.conv1.weight", "unexpected key fc.weight", "unexpected key fc.bias"):
        assert any(key in r.getMessage() and str(path) in r.getMessage() for r in caplog.records), key
    assert torch.equal(model.encoder.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def test_shape_mismatch_outside_classifier_is_an_error(tmp_path):
    state = tv_resnet.resnet18(weights=None).state_dict()
    state["layer3.0.conv1.weight"] = torch.zeros(256, 128, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(PretrainedLoadError, match=r"layer3\.0\.conv1\.weight: file \(256, 128, 1, 1\) vs model "
                                                  r"\(256, 128, 3, 3\)") as info:
        build_model({"encoder": "resnet18", "pretrained": str(path)})
    assert str(path) in str(info.value)


def test_full_checkpoint_with_other_class_count_skips_only_the_classifier(tmp_path, caplog):
    source = DeepLabV3Plus("resnet18", num_classes=19, output_stride=16)
    path = tmp_path / "city.pth"
    torch.save({"model": {"module." + k: v for k, v in source.state_dict().items()}, "config": {}}, path)
    with caplog.at_level(logging.WARNING, logger="seg.models.pretrained"):
        model = build_model({"encoder": "resnet18", "num_classes": 7, "output_stride": 16, "pretrained": str(path)})
    report = model.pretrained_report
    assert report.target == "model"
    assert report.skipped_classifier == ["decoder.classifier.weight", "decoder.classifier.bias"]
    assert report.missing == [] and report.unexpected == []
    assert any("classifier tensor decoder.classifier.weight skipped" in r.getMessage() for r in caplog.records)
    assert model.decoder.classifier.weight.shape == (7, 256, 1, 1)
    assert torch.equal(model.aspp.project[0].weight, source.aspp.project[0].weight)
    assert torch.equal(model.encoder.conv1.weight, source.encoder.conv1.weight)


def test_unreadable_or_foreign_checkpoints_name_the_file(tmp_path):
    with pytest.raises(PretrainedLoadError, match="does not exist"):
        build_model({"encoder": "resnet18", "pretrained": str(tmp_path / "nope.pth")})
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedLoadError, match="cannot read pretrained checkpoint .*corrupt.pth"):
        build_model({"encoder": "resnet18", "pretrained": str(corrupt)})
    foreign = tmp_path / "foreign.pth"
    torch.save({"backbone.stem.weight": torch.zeros(3)}, foreign)
    with pytest.raises(PretrainedLoadError, match="foreign.pth: none of its 1 tensors matches the encoder"):
        build_model({"encoder": "resnet18", "pretrained": str(foreign)})


# -- torchvision weights through torchvision's cache (pre-populated: nothing is downloaded) ----------

def _no_download(*args, **kwargs):
    raise AssertionError("tried to download")


def test_torchvision_weight_name_loads_from_torchvision_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    torch.manual_seed(3)
    state = tv_resnet.resnet18(weights=None).state_dict()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / "resnet18-f37072fd.pth")  # the file name torchvision gives IMAGENET1K_V1
    model = build_model({"encoder": "resnet18", "pretrained": "torchvision:ResNet18_Weights.IMAGENET1K_V1"})
    assert model.pretrained_report.target == "encoder" and model.pretrained_report.missing == []
    assert torch.equal(model.encoder.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert torch.equal(model.encoder.conv1.weight, state["conv1.weight"])


def test_torchvision_resnet50_name_resolves_to_the_cache_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    target = tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    target.parent.mkdir(parents=True)
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, target)
    assert resolve_pretrained("torchvision:ResNet50_Weights.IMAGENET1K_V1") == target
    assert resolve_pretrained(str(tmp_path / "local.pth")) == tmp_path / "local.pth"


@pytest.mark.slow
def test_torchvision_weight_errors_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, dst, progress=True):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(PretrainedLoadError) as offline_error:
        build_model({"encoder": "resnet18", "pretrained": "torchvision:ResNet18_Weights.IMAGENET1K_V1"})
    message = str(offline_error.value)  # one line naming the cache folder and how to run without the weights
    assert "\n" not in message and message.startswith(
        "model.pretrained torchvision:ResNet18_Weights.IMAGENET1K_V1: resnet18-f37072fd.pth is not in torchvision's "
        f"cache {tmp_path / 'hub' / 'checkpoints'} and downloading https://download.pytorch.org/models/resnet18-"
        "f37072fd.pth failed (network unreachable)"), message
    assert message.endswith("or start from random weights with --opts model.pretrained=null"), message
    with pytest.raises(PretrainedLoadError, match="ResNet18_Weights has no member 'IMAGENET9'"):
        build_model({"encoder": "resnet18", "pretrained": "torchvision:ResNet18_Weights.IMAGENET9"})
    with pytest.raises(PretrainedLoadError, match="torchvision has no weights enum 'Nope_Weights'"):
        build_model({"encoder": "resnet18", "pretrained": "torchvision:Nope_Weights.X"})
    with pytest.raises(PretrainedLoadError, match="does not exist; for a torchvision ResNet use model.pretrained="
                                                  ".*--opts model.pretrained=null$"):
        build_model({"encoder": "resnet18", "pretrained": str(tmp_path / "nope.pth")})
