"""The "custom_op" compile path (seg/nn/custom_op.py): seg::partial_conv2d under torch.compile has no graph break, no
more graphs over a run of sizes than zero padding, the float64 reference's values and gradients, and passes opcheck."""
import copy

import pytest
import torch
from test_compile import assert_matches, compile_and_run
from test_convert_padding import tf_same_amounts
from timm.layers import Conv2dSame
from torch import nn

from seg.nn import COMPILE_PATHS, PaddingError, PartialConv2d, PartialConv2dSame, convert_padding, set_compile_path
from seg.nn.reference import naive_partial_conv

SIZES = [(9, 11), (12, 13), (16, 15), (17, 20)]  # both parities: TensorFlow "same" pads depend on them
OP = torch.ops.seg.partial_conv2d.default
# (layer, reference padding of an (H, W) input as (top, bottom, left, right)): stride 2 with bias, dilation 2 with
# "same", groups without bias, even-kernel "same" (asymmetric), TensorFlow "same" (pads vary with the size)
GEOMETRIES = {
    "stride2_bias": (lambda: PartialConv2d(3, 4, 3, stride=2, padding=1), lambda h, w: (1, 1, 1, 1)),
    "dilation2_same": (lambda: PartialConv2d(3, 4, 3, padding="same", dilation=2), lambda h, w: (2, 2, 2, 2)),
    "groups_no_bias": (lambda: PartialConv2d(4, 6, 3, padding=(2, 1), groups=2, bias=False),
                       lambda h, w: (2, 2, 1, 1)),
    "even_same": (lambda: PartialConv2d(3, 4, 4, padding="same"), lambda h, w: (1, 2, 1, 2)),
    "tf_same": (lambda: PartialConv2dSame(3, 4, 3, stride=2, padding=0),
                lambda h, w: (*tf_same_amounts(h, 3, 2, 1), *tf_same_amounts(w, 3, 2, 1))),
}


@pytest.fixture
def custom_op_path():
    old = set_compile_path("custom_op")
    yield
    set_compile_path(old)


def compiled_runs(model: nn.Module, backend: str, sizes, channels: int = 3):
    """Compile ``model`` with ``backend``, recording dynamo's graphs; forward + backward once per (H, W) (batch 2,
    float64). Returns (graphs, graph breaks, seg::partial_conv2d calls in them, [(x, y, gradients)])."""
    graphs, breaks, runs = compile_and_run(model, backend, sizes, channels)
    calls = sum(node.target is torch.ops.seg.partial_conv2d for gm in graphs for node in gm.graph.nodes)
    return len(graphs), breaks, calls, runs


def test_set_compile_path_takes_only_the_listed_paths():
    assert COMPILE_PATHS == ("plain", "custom_op")
    with pytest.raises(PaddingError, match="compile path must be one of"):
        set_compile_path("fused")
    assert set_compile_path("plain") == "plain"


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_small_model_compiles_without_breaks_and_no_more_graphs_than_zero_padding(custom_op_path, backend):
    torch.manual_seed(0)
    zeros = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 4, 3, stride=2, padding=1, bias=False), nn.ReLU(),
                          Conv2dSame(4, 2, 3, stride=2)).double()
    model = convert_padding(copy.deepcopy(zeros), "partial")
    graphs, breaks, calls, _ = compiled_runs(model, backend, SIZES)
    zero_graphs, zero_breaks, _, _ = compiled_runs(zeros, backend, SIZES)
    assert (breaks, zero_breaks) == (0, 0)
    assert graphs <= zero_graphs, (graphs, zero_graphs)
    assert calls == 3 * graphs  # every conv of every graph runs the registered op, not the plain maths


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_compiled_op_matches_float64_reference(custom_op_path, name):
    make, pads_of_size = GEOMETRIES[name]
    torch.manual_seed(0)
    conv = make().double()
    graphs, breaks, calls, runs = compiled_runs(conv, "aot_eager", SIZES[:3], channels=conv.in_channels)
    assert breaks == 0 and calls == graphs >= 1
    for x, y, grads in runs:
        x.requires_grad_()
        want = naive_partial_conv(x, conv.weight, conv.bias, conv.stride, pads_of_size(*x.shape[-2:]),
                                  conv.dilation, conv.groups)[0]
        assert_matches(y, grads, want, [x, *conv.parameters()])


def test_jit_trace_keeps_the_plain_maths(custom_op_path):
    conv = PartialConv2d(3, 4, 3, padding=1)
    traced = torch.jit.trace(conv, torch.randn(1, 3, 8, 8))
    assert "seg::partial_conv2d" not in str(traced.graph)
    x = torch.randn(1, 3, 11, 9)
    torch.testing.assert_close(traced(x), conv(x))  # the traced plain maths follow the input size


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="the CUDA case runs the Triton border kernel: needs a GPU"))])
@pytest.mark.parametrize("name", ["stride2_bias", "groups_no_bias", "even_same"])
def test_opcheck(name, device):
    """torch.library.opcheck: schema, autograd registration, fake tensor against the real kernel, AOT dispatch with
    static and dynamic shapes (all CPU-only here; the CUDA case, skipped without a GPU, covers the border kernel)."""
    make, pads_of_size = GEOMETRIES[name]
    torch.manual_seed(0)
    conv = make().to(device)
    x = torch.randn(2, conv.in_channels, 9, 11, device=device, requires_grad=True)
    args = (x, conv.weight, conv.bias, list(conv.stride), list(pads_of_size(9, 11)), list(conv.dilation), conv.groups)
    torch.library.opcheck(OP, args)


def test_autocast_casts_as_for_the_eager_conv(custom_op_path):
    """Autocast does not reach into a custom op: the layer casts x, weight and bias itself, so the compiled output
    has the eager layer's bfloat16 dtype and is the float64 reference within bfloat16 rounding."""
    torch.manual_seed(0)
    conv = PartialConv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 9, 11)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = torch.compile(conv, backend="aot_eager")(x)
        want_dtype = conv(x).dtype
    torch._dynamo.reset()
    assert y.dtype == want_dtype == torch.bfloat16
    want = naive_partial_conv(x, conv.weight, conv.bias, (1, 1), 1, (1, 1), 1)[0]
    torch.testing.assert_close(y.double(), want, rtol=2e-2, atol=2e-2)
