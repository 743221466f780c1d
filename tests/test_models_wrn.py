"""DeepLabV3+ on WideResNet-38: structure against the published WRN-38 layout and NVIDIA's checkpoint format.

WRN-38 has 137M parameters, so this module builds one model per output stride and feeds it 33x47.
"""
import math

import pytest
import torch
from torch import nn

from seg.models import DeepLabV3Plus, build_model
from seg.nn import PartialConv2d

SIZE = (33, 47)
# WRN-38: stage -> (channels, stride at OS 8, stride at OS 16)
STAGES = {"mod1": (64, 1, 1), "mod2": (128, 2, 2), "mod3": (256, 4, 4), "mod4": (512, 8, 8),
          "mod5": (1024, 8, 16), "mod6": (2048, 8, 16), "mod7": (4096, 8, 16)}
# padded-conv dilation per stage
DILATIONS = {8: {"mod2": 1, "mod3": 1, "mod4": 1, "mod5": 2, "mod6": 4, "mod7": 4},
             16: {"mod2": 1, "mod3": 1, "mod4": 1, "mod5": 1, "mod6": 2, "mod7": 2}}


def strided_size(size: int, stride: int) -> int:
    # every stride-2 step (3x3 max-pool or 3x3 conv, padding 1) gives ceil(n / 2)
    for _ in range(int(math.log2(stride))):
        size = math.ceil(size / 2)
    return size


@pytest.fixture(scope="module")
def wrn_os8_partial():
    torch.manual_seed(0)
    return DeepLabV3Plus("wider_resnet38", num_classes=19, output_stride=8, padding_mode="partial").eval()


@pytest.mark.slow
def test_parameter_counts(wrn_os8_partial):
    encoder = sum(p.numel() for p in wrn_os8_partial.encoder.parameters())
    total = sum(p.numel() for p in wrn_os8_partial.parameters())
    print(f"WRN-38 stem+stages: {encoder:,} parameters; DeepLabV3+ (19 classes): {total:,}")
    assert encoder == 105_062_720
    assert round(total / 1e6, 2) == 137.10


def test_block_counts_and_dropout(wrn_os8_partial):
    enc = wrn_os8_partial.encoder
    assert [len(getattr(enc, f"mod{i}")) for i in range(2, 8)] == [3, 3, 6, 3, 1, 1]
    drops = {name: [m.p for m in getattr(enc, name).modules() if isinstance(m, nn.Dropout2d)]
             for name in ("mod5", "mod6", "mod7")}
    assert drops == {"mod5": [], "mod6": [0.3], "mod7": [0.5]}
    # bottleneck stages: 1x1 -> 3x3 -> 1x1 with the published widths
    convs = enc.mod7.block1.convs
    assert (convs.conv1.out_channels, convs.conv2.out_channels, convs.conv3.out_channels) == (1024, 2048, 4096)


def check_stages(model, output_stride):
    with torch.no_grad():
        feats = model.encoder.forward_features(torch.randn(1, 3, *SIZE))
    column = 1 if output_stride == 8 else 2
    assert model.encoder.feature_strides == {name: spec[column] for name, spec in STAGES.items()}
    for name, spec in STAGES.items():
        stride = spec[column]
        assert feats[name].shape == (1, spec[0], strided_size(SIZE[0], stride), strided_size(SIZE[1], stride)), name
    for stage, dilation in DILATIONS[output_stride].items():
        padded = [m for m in getattr(model.encoder, stage).modules()
                  if isinstance(m, nn.Conv2d) and any(m.padding)]
        assert padded and all(m.dilation == (dilation, dilation) == m.padding for m in padded), stage


def test_stage_channels_strides_dilations_os8(wrn_os8_partial):
    check_stages(wrn_os8_partial, 8)


@pytest.mark.slow
def test_output_shape_os8_partial_and_every_padded_conv_is_partial(wrn_os8_partial):
    with torch.no_grad():
        assert wrn_os8_partial(torch.randn(1, 3, *SIZE)).shape == (1, 19, *SIZE)
    padded = [(n, m) for n, m in wrn_os8_partial.named_modules() if isinstance(m, nn.Conv2d) and any(m.padding)]
    # stem + 2 per plain block (3+3+6+3 blocks) + 1 per bottleneck (2) + 3 ASPP + 2 decoder
    assert len(padded) == 1 + 2 * 15 + 2 + 3 + 2
    assert all(isinstance(m, PartialConv2d) for _, m in padded), [n for n, m in padded if type(m) is nn.Conv2d]
    # NVIDIA's skip: stage 2 (128 ch), reduced to 48 channels
    assert wrn_os8_partial.decoder.reduce[0].in_channels == 128
    assert [b[0].dilation[0] for b in wrn_os8_partial.aspp.branches[1:]] == [12, 24, 36]


@pytest.mark.slow
def test_os16_zeros_shapes_and_same_keys(wrn_os8_partial):
    model = DeepLabV3Plus("wider_resnet38", num_classes=19, output_stride=16, padding_mode="zeros").eval()
    check_stages(model, 16)
    with torch.no_grad():
        assert model(torch.randn(1, 3, *SIZE)).shape == (1, 19, *SIZE)
    assert [(k, v.shape) for k, v in model.state_dict().items()] == \
        [(k, v.shape) for k, v in wrn_os8_partial.state_dict().items()]


@pytest.mark.slow
def test_nvidia_imagenet_checkpoint_format_loads(tmp_path, caplog):
    """NVIDIA's wider_resnet38.pth.tar: {"state_dict": DataParallel keys, bnrelu = Sequential(BN, ReLU)}."""
    gen = torch.Generator().manual_seed(0)
    shapes = {
        "module.mod1.conv1.weight": (64, 3, 3, 3),
        "module.mod2.block1.bn1.0.weight": (64,),
        "module.mod2.block1.bn1.0.running_var": (64,),
        "module.mod2.block1.convs.conv1.weight": (128, 64, 3, 3),
        "module.mod2.block1.convs.bn2.0.bias": (128,),
        "module.mod2.block1.proj_conv.weight": (128, 64, 1, 1),
        "module.mod6.block1.convs.conv2.weight": (1024, 512, 3, 3),
        "module.mod7.block1.convs.conv3.weight": (4096, 2048, 1, 1),
        "module.bn_out.0.weight": (4096,),
        "module.classifier.fc.weight": (1000, 4096),
    }
    state = {k: torch.rand(s, generator=gen) for k, s in shapes.items()}
    path = tmp_path / "wider_resnet38.pth.tar"
    torch.save({"epoch": 90, "state_dict": state}, path)
    model = build_model({"encoder": "wider_resnet38", "output_stride": 16, "pretrained": str(path)})
    report = model.pretrained_report
    assert report.target == "encoder"
    assert report.unexpected == ["bn_out.0.weight", "classifier.fc.weight"]
    own = model.encoder.state_dict()
    assert len(report.loaded) == 8
    # every other encoder tensor is reported missing (BN's step counters are filled in by torch, not weights)
    assert set(report.missing) == {k for k in own if not k.endswith("num_batches_tracked")} - set(report.loaded)
    for key in shapes:
        short = key.removeprefix("module.")
        if short in own:
            assert torch.equal(own[short], state[key]), short


@pytest.mark.slow
def test_mapillary_inplace_abn_single_norm_layout_is_remapped(tmp_path):
    """Mapillary's In-Place ABN WRN-38 ImageNet file: one module per norm (``bn1.weight``), not (BN, ReLU)."""
    gen = torch.Generator().manual_seed(1)
    shapes = {  # file key -> (shape, the key it must land on in our encoder, written out by hand)
        "module.mod1.conv1.weight": ((64, 3, 3, 3), "mod1.conv1.weight"),
        "module.mod2.block1.bn1.weight": ((64,), "mod2.block1.bn1.0.weight"),
        "module.mod2.block1.bn1.bias": ((64,), "mod2.block1.bn1.0.bias"),
        "module.mod2.block1.bn1.running_mean": ((64,), "mod2.block1.bn1.0.running_mean"),
        "module.mod2.block1.bn1.running_var": ((64,), "mod2.block1.bn1.0.running_var"),
        "module.mod2.block1.convs.bn2.weight": ((128,), "mod2.block1.convs.bn2.0.weight"),
        "module.mod6.block1.convs.bn3.running_var": ((1024,), "mod6.block1.convs.bn3.0.running_var"),
        "module.mod2.block1.convs.conv1.weight": ((128, 64, 3, 3), "mod2.block1.convs.conv1.weight"),
    }
    state = {k: torch.rand(s, generator=gen) for k, (s, _) in shapes.items()}
    state["module.bn_out.weight"] = torch.rand(4096, generator=gen)  # ImageNet-only head norm
    path = tmp_path / "wide_resnet38_ipabn_lr_256.pth.tar"
    torch.save({"state_dict": state}, path)
    model = build_model({"encoder": "wider_resnet38", "output_stride": 16, "pretrained": str(path)})
    report = model.pretrained_report
    assert report.remapped == 6 and "6 remapped" in report.summary()
    assert sorted(report.loaded) == sorted(ours for _, ours in shapes.values())
    assert report.unexpected == ["bn_out.weight"]
    own = model.encoder.state_dict()
    for key, (_, ours) in shapes.items():
        assert torch.equal(own[ours], state[key]), ours
