"""timm encoders (model.encoder timm/<name>): feature choice, output strides, padding modes, local weights."""
import pytest
import torch
from torch import nn

from seg.engine.distributed import DistInfo, convert_sync_bn
from seg.models import TimmEncoderError, build_encoder, build_model
from seg.nn import PartialConv2dSame, padding_modes

timm = pytest.importorskip("timm")


@pytest.mark.parametrize("name,skip,out", [("resnet18", 64, 512), ("tf_efficientnet_b0", 24, 320)])
@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.slow
def test_encoder_shapes_follow_reduction_4_and_the_output_stride(name, skip, out, output_stride):
    torch.manual_seed(0)
    encoder = build_encoder(f"timm/{name}", output_stride, "partial", "bn").eval()
    assert (encoder.skip_channels, encoder.out_channels) == (skip, out)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        low, high = encoder(x)
    assert low.shape == (1, skip, 16, 24)  # reduction 4
    assert high.shape == (1, out, 64 // output_stride, 96 // output_stride)
    modes = padding_modes(encoder)
    assert modes and set(modes.values()) == {"partial"}
    if name.startswith("tf_"):  # TensorFlow-"same" convs are converted too, not skipped
        assert any(isinstance(m, PartialConv2dSame) for m in encoder.modules())


@pytest.mark.slow
def test_deeplabv3plus_on_timm_encoder_and_local_weights(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("resnet18", pretrained=False, num_classes=5)
    path = tmp_path / "resnet18_timm.pth"
    torch.save(source.state_dict(), path)
    model = build_model({"encoder": "timm/resnet18", "num_classes": 3, "output_stride": 16, "padding": "partial",
                         "pretrained": str(path)}).eval()
    assert model.pretrained_report.unexpected == ["body.fc.weight", "body.fc.bias"]
    assert model.pretrained_report.missing == []
    assert torch.equal(model.encoder.body.layer3[0].conv1.weight, source.layer3[0].conv1.weight)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 50, 70)).shape == (2, 3, 50, 70)


def test_timm_encoder_errors_are_one_line_and_name_the_encoder():
    with pytest.raises(TimmEncoderError, match="timm/no_such_net.*no model"):
        build_encoder("timm/no_such_net", 16, "zeros", "bn")
    with pytest.raises(TimmEncoderError, match="timm/vit_tiny_patch16_224 cannot be dilated to output stride 8"):
        build_encoder("timm/vit_tiny_patch16_224", 8, "zeros", "bn")
    encoder = build_encoder("timm/resnet18", 16, "zeros", "syncbn")  # plain BatchNorm2d converts
    assert any(isinstance(m, nn.SyncBatchNorm) for m in encoder.modules())


def test_syncbn_keeps_timm_norm_activations_and_the_cpu_fallback_restores_them():
    """timm's BatchNormAct2d fuses an activation: SyncBatchNorm conversion and the CPU fallback back to
    per-process norms must keep it. Reference: the same seed built with plain norms (timm's own layers)."""
    torch.manual_seed(0)
    plain = build_encoder("timm/tf_efficientnet_b0", 16, "zeros", "bn").eval()
    torch.manual_seed(0)
    synced = build_encoder("timm/tf_efficientnet_b0", 16, "zeros", "syncbn")
    plain_modules, synced_modules = dict(plain.named_modules()), dict(synced.named_modules())
    norm_acts = [name for name, m in plain_modules.items() if isinstance(m, timm.layers.BatchNormAct2d)]
    assert sum(isinstance(plain_modules[name].act, nn.SiLU) for name in norm_acts) > 10
    for name in norm_acts:
        assert isinstance(synced_modules[name], timm.layers.SyncBatchNormAct), name
        assert type(synced_modules[name].act) is type(plain_modules[name].act), name
    two_cpu_ranks = DistInfo(rank=1, world_size=2, local_rank=1, device=torch.device("cpu"))
    reverted = convert_sync_bn(synced, True, two_cpu_ranks).eval()
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in reverted.modules())
    reverted_modules = dict(reverted.named_modules())
    assert all(type(reverted_modules[name]) is timm.layers.BatchNormAct2d for name in norm_acts)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for got, want in zip(reverted(x), plain(x), strict=True):
            assert torch.equal(got, want)
