"""convert_padding on torchvision models, checked against torchvision's own convs and explicit F.pad."""
import copy
import math
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18, resnet50, vgg11_bn

from seg.nn import (
    PADDING_MODES,
    PaddingConversionError,
    PartialConv2d,
    PartialConv2dSame,
    convert_padding,
    create_conv2d,
    padding_modes,
)
from seg.nn.reference import naive_partial_conv


def make_resnet50():
    torch.manual_seed(0)
    return resnet50(num_classes=10).eval()


class ExplicitPad(nn.Module):
    """Reference for one padded conv: pad with F.pad (or the naive partial formula), then a valid conv."""

    def __init__(self, conv, mode):
        super().__init__()
        self.conv, self.mode = conv, mode

    def forward(self, x):
        c = self.conv
        if self.mode == "partial":
            return naive_partial_conv(x, c.weight, c.bias, c.stride, c.padding, c.dilation, c.groups)[0].to(x.dtype)
        ph, pw = c.padding
        x = F.pad(x, (pw, pw, ph, ph), mode="constant" if self.mode == "zeros" else self.mode)
        return F.conv2d(x, c.weight, c.bias, c.stride, 0, c.dilation, c.groups)


def explicit_reference(model, mode):
    ref = copy.deepcopy(model)
    for sub in list(ref.modules()):
        for child_name, child in list(sub.named_children()):
            if isinstance(child, nn.Conv2d) and any(child.padding):
                setattr(sub, child_name, ExplicitPad(child, mode))
    return ref


def test_resnet50_round_trip_is_exact_and_keys_unchanged():
    model = make_resnet50()
    x = torch.randn(1, 3, 67, 45)
    keys = list(model.state_dict())
    with torch.no_grad():
        before = model(x)
        convert_padding(model, "partial")
        partial = model(x)
        assert list(model.state_dict()) == keys
        convert_padding(model, "zeros")
        after = model(x)
    assert torch.equal(before, after)
    assert not torch.allclose(before, partial)  # the partial model really is different
    assert list(model.state_dict()) == keys


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate"])
@pytest.mark.slow
def test_resnet50_modes_equal_explicit_padding(mode):
    model = make_resnet50()
    x = torch.randn(1, 3, 64, 72)
    convert_padding(model, mode)
    with torch.no_grad():
        torch.testing.assert_close(model(x), explicit_reference(model, mode)(x), rtol=1e-4, atol=1e-5)


def test_resnet18_partial_equals_naive_reference_float64():
    torch.manual_seed(1)
    model = resnet18(num_classes=5).double().eval()
    x = torch.randn(1, 3, 41, 50, dtype=torch.float64)
    convert_padding(model, "partial")
    with torch.no_grad():
        torch.testing.assert_close(model(x), explicit_reference(model, "partial")(x), rtol=1e-10, atol=1e-10)


def test_reflect_replicate_factory_equals_torch_conv():
    x = torch.randn(2, 3, 11, 9)
    for mode in ("reflect", "replicate"):
        ours = create_conv2d(3, 4, 3, dilation=2, padding_mode=mode)
        torch_conv = nn.Conv2d(3, 4, 3, padding=2, dilation=2, padding_mode=mode)
        torch_conv.load_state_dict(ours.state_dict())
        torch.testing.assert_close(ours(x), torch_conv(x), rtol=0, atol=0)


@pytest.mark.slow
def test_every_padded_conv_converted_and_unpadded_left_alone():
    model = vgg11_bn()
    model.features.add_module("pointwise", nn.Conv2d(512, 512, 1))
    convert_padding(model, "partial")
    for sub in model.modules():
        if isinstance(sub, nn.Conv2d):
            assert isinstance(sub, PartialConv2d) == any(sub.padding)
    assert set(padding_modes(model).values()) == {"partial"}


def test_converting_twice_changes_nothing_and_params_are_shared():
    model = make_resnet50()
    params = {name: p for name, p in model.named_parameters()}
    convert_padding(model, "partial")
    once = padding_modes(model)
    convert_padding(model, "partial")
    assert padding_modes(model) == once
    assert all(p is params[name] for name, p in model.named_parameters())


@pytest.mark.slow
def test_all_modes_share_state_dict():
    model = make_resnet50()
    sd = copy.deepcopy(model.state_dict())
    for mode in PADDING_MODES:
        convert_padding(model, mode)
        assert list(model.state_dict()) == list(sd)
        fresh = convert_padding(make_resnet50(), mode)
        fresh.load_state_dict(model.state_dict())  # strict: same keys, same shapes


def relative_error(got, want):
    """||got - want|| / ||want|| in float64."""
    return ((got.double() - want).norm() / want.norm()).item()


@pytest.mark.slow
def test_bf16_autocast_partial_resnet50_close_to_float64_naive_reference():
    model = convert_padding(make_resnet50(), "partial")
    x = torch.randn(1, 3, 37, 45)  # odd sizes: every stage has a border row and column of its own
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(x)
        want = explicit_reference(model, "partial").double()(x.double())
        zeros = convert_padding(make_resnet50(), "zeros")(x)
    assert got.dtype == torch.bfloat16  # autocast really ran the network in bf16
    # bf16 keeps 8 significant bits (unit roundoff 2**-8); over ~50 layers the rounding errors mostly average
    # out, so a few units is ample, while zero padding of the same weights lands about 100 % away
    tolerance = 8 * 2.0**-8
    assert relative_error(got, want) < tolerance
    assert relative_error(zeros, want) > 10 * tolerance


def test_unknown_mode_and_custom_subclass_rejected():
    with pytest.raises(ValueError, match="unknown padding mode"):
        convert_padding(make_resnet50(), "mirror")

    class MyConv(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) * 2

    with pytest.raises(TypeError, match="block.*MyConv"):
        convert_padding(nn.ModuleDict({"block": MyConv(1, 1, 3, padding=1)}), "partial")


@pytest.mark.slow
def test_torch_compile_train_step_matches_eager():
    torch.manual_seed(0)
    model = nn.Sequential(create_conv2d(3, 8, 3, padding_mode="partial"), nn.ReLU(),
                          create_conv2d(8, 4, 3, stride=2, dilation=2, padding_mode="partial", bias=True))
    x = torch.randn(2, 3, 17, 20, requires_grad=True)
    model(x).square().sum().backward()
    want = [x.grad.clone()] + [p.grad.clone() for p in model.parameters()]
    x.grad = None
    model.zero_grad()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    compiled(x).square().sum().backward()
    got = [x.grad] + [p.grad for p in model.parameters()]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_padding_edited_after_construction_is_honoured(mode):
    conv = nn.Conv2d(2, 3, 3, padding=1)
    conv.padding, conv.dilation = (2, 2), (2, 2)  # as when a model dilates a layer in place
    convert_padding(conv, mode)
    x = torch.randn(1, 2, 9, 8)
    torch.testing.assert_close(conv(x), ExplicitPad(conv, mode)(x), rtol=1e-5, atol=1e-6)


def tf_same_amounts(size, kernel, stride, dilation):
    """TensorFlow "same": enough padding for ceil(size / stride) outputs, the odd pixel at the end."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


@pytest.mark.parametrize("kernel,stride,dilation,size", [(3, 2, 1, (17, 20)), (5, 2, 1, (16, 13)),
                                                          (3, 1, 2, (9, 10)), (4, 1, 1, (11, 8)), (2, 2, 1, (7, 9))])
def test_timm_conv2d_same_becomes_partial_over_the_tf_same_window(kernel, stride, dilation, size):
    conv2d_same = pytest.importorskip("timm.layers.conv2d_same")
    torch.manual_seed(0)
    conv = conv2d_same.Conv2dSame(3, 4, kernel, stride=stride, dilation=dilation, bias=True)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        timm_out = conv(x)
        model = nn.Sequential(conv)
        keys = list(model.state_dict())
        convert_padding(model, "partial")
        assert padding_modes(model) == {"0": "partial"}
        got = model(x)
    (pt, pb), (pl, pr) = (tf_same_amounts(n, kernel, stride, dilation) for n in size)
    assert pt + pb + pl + pr > 0
    want = naive_partial_conv(x, conv.weight, conv.bias, (stride, stride), (pt, pb, pl, pr), (dilation, dilation), 1)[0]
    assert got.shape == timm_out.shape
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    # gradients through the autograd path agree with the reference too
    xg = x.clone().requires_grad_()
    model(xg).sum().backward()
    xr = x.double().requires_grad_()
    naive_partial_conv(xr, conv.weight, conv.bias, (stride, stride), (pt, pb, pl, pr), (dilation, dilation), 1)[0] \
        .sum().backward()
    torch.testing.assert_close(xg.grad.double(), xr.grad, rtol=1e-5, atol=1e-5)
    convert_padding(model, "zeros")
    assert type(model[0]) is conv2d_same.Conv2dSame and list(model.state_dict()) == keys
    with torch.no_grad():
        assert torch.equal(model(x), timm_out)


def test_timm_same_padding_forms():
    timm_layers = pytest.importorskip("timm.layers")
    torch.manual_seed(0)
    static = timm_layers.create_conv2d(3, 4, 3, padding="same")  # stride 1: timm pads statically, a plain conv
    assert type(static) is nn.Conv2d and static.padding == (1, 1)
    convert_padding(static, "partial")
    x = torch.randn(1, 3, 10, 9)
    torch.testing.assert_close(static(x).double(), naive_partial_conv(x, static.weight, static.bias, (1, 1), (1, 1),
                                                                      (1, 1), 1)[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(PaddingConversionError, match="0: .*Conv2dSame.*reflect"):
        convert_padding(nn.Sequential(timm_layers.create_conv2d(3, 4, 3, stride=2, padding="same")), "reflect")
    # weight-standardised convs pad to "same" inside their own forward: refused, never skipped
    with pytest.raises(PaddingConversionError, match="0: .*StdConv2dSame"):
        convert_padding(nn.Sequential(timm_layers.StdConv2dSame(3, 4, 3, stride=2)), "partial")
    # max pooling pads with -inf, which no window ever picks: already border-neutral, left alone
    pool = timm_layers.create_pool2d("max", 3, stride=2, padding="same")
    assert convert_padding(nn.Sequential(pool), "partial")[0] is pool


@pytest.mark.parametrize("mode", ["partial", "zeros"])
@pytest.mark.slow
def test_tf_efficientnet_zeros_is_timm_and_partial_has_no_zero_padding_left(mode):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_b0", pretrained=False, num_classes=3).eval()
    x = torch.randn(1, 3, 37, 45)
    with torch.no_grad():
        before = model(x)
        convert_padding(model, mode)
        after = model(x)
    modes = padding_modes(model)
    assert modes and set(modes.values()) == {mode}
    if mode == "zeros":
        assert torch.equal(before, after)
    else:
        assert not torch.allclose(before, after)


def test_partial_same_conv_built_directly_converts_to_timms_zero_padding_conv(monkeypatch):
    """A PartialConv2dSame made by hand (never a timm Conv2dSame) switches to zeros as timm's Conv2dSame, whose
    output is TensorFlow's "same" zero padding computed here by hand; without timm, one PaddingConversionError."""
    conv2d_same = pytest.importorskip("timm.layers.conv2d_same")
    torch.manual_seed(0)
    conv = PartialConv2dSame(3, 4, 3, stride=2, padding=0)
    x = torch.randn(1, 3, 9, 10)
    convert_padding(conv, "zeros")
    assert type(conv) is conv2d_same.Conv2dSame
    # TF "same" along each axis: ceil(n / s) outputs, total padding split with the odd pixel at the end
    pads = []
    for n in (10, 9):  # width first, as F.pad takes them
        total = max((-(-n // 2) - 1) * 2 + 3 - n, 0)
        pads += [total // 2, total - total // 2]
    want = F.conv2d(F.pad(x, pads), conv.weight, conv.bias, stride=2)
    torch.testing.assert_close(conv(x), want)

    again = PartialConv2dSame(3, 4, 3, stride=2, padding=0)
    monkeypatch.delitem(sys.modules, "timm.layers.conv2d_same")
    with pytest.raises(PaddingConversionError, match="PartialConv2dSame built directly"):
        convert_padding(again, "zeros")
    assert type(again) is PartialConv2dSame
