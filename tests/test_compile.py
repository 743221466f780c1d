"""PartialConv2d under torch.compile (seg/nn/traced.py): no graph break, no more graphs over a run of input sizes
than the same model with zero padding, and the values and gradients of the float64 reference."""
import copy
import itertools

import pytest
import torch
from test_convert_padding import tf_same_amounts
from timm.layers import Conv2dSame
from torch import nn
from torch._dynamo.utils import counters
from torchvision.models import resnet18

from seg.nn import PartialConv2d, PartialConv2dSame, convert_padding, create_conv2d
from seg.nn.partial_conv import conv_pads
from seg.nn.reference import grid_cases, naive_partial_conv
from seg.nn.traced import _axis_ratio, traced_partial_conv


def compile_and_run(model: nn.Module, backend: str, sizes, channels: int = 3):
    """Compile ``model`` with ``backend``, recording every graph it is handed, and run forward + backward once per
    (H, W) in ``sizes`` (batch 2, float64). Returns (graph modules compiled, graph breaks,
    [(x, y, gradients of x and every parameter)])."""
    torch._dynamo.reset()
    counters.clear()
    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return torch._dynamo.lookup_backend(backend)(gm, example_inputs)

    compiled = torch.compile(model, backend=record)
    runs = []
    for i, (h, w) in enumerate(sizes):
        torch.manual_seed(i)
        x = torch.randn(2, channels, h, w, dtype=torch.float64, requires_grad=True)
        y = compiled(x)
        grads = torch.autograd.grad(y.square().sum(), [x, *model.parameters()])
        runs.append((x.detach(), y.detach(), grads))
    breaks = sum(counters["graph_break"].values())
    torch._dynamo.reset()
    return graphs, breaks, runs


def compiled_runs(model: nn.Module, backend: str, sizes, channels: int = 3):
    """:func:`compile_and_run` with the number of graphs compiled instead of the graphs."""
    graphs, breaks, runs = compile_and_run(model, backend, sizes, channels)
    return len(graphs), breaks, runs


def assert_matches(got_y, got_grads, want_y, leaves):
    """Output and gradients of ``want_y`` (loss: sum of squares) w.r.t. ``leaves`` equal ``got_*``."""
    torch.testing.assert_close(got_y, want_y.detach())
    for got, want in zip(got_grads, torch.autograd.grad(want_y.square().sum(), leaves)):
        torch.testing.assert_close(got, want)


def test_axis_ratio_is_the_rounded_quotient_of_brute_force_tap_counts():
    """float32 ratio bit for bit equal to float64 K / count rounded once to float32 (what the eager plan stores)."""
    for size, k, s, d, lo, hi in itertools.product(range(1, 10), range(1, 6), range(1, 4), range(1, 3), range(4),
                                                   range(4)):
        n_out = (size + lo + hi - d * (k - 1) - 1) // s + 1
        if n_out <= 0:
            continue
        counts = [sum(0 <= i * s - lo + t * d < size for t in range(k)) for i in range(n_out)]
        want = torch.tensor([k / c if c else 0.0 for c in counts], dtype=torch.float64).float()
        ratio, valid = _axis_ratio(size, k, s, lo, hi, d, torch.device("cpu"), torch.float32)
        assert torch.equal(ratio, want), (size, k, s, d, lo, hi)
        assert torch.equal(valid, torch.tensor([float(c > 0) for c in counts]))


def test_traced_conv_matches_float64_reference():
    """Every geometry of the reference grid (strides, dilations, groups, bias, "same", asymmetric and
    large padding), forward and every gradient, in the plain-ops form the compilers trace."""
    for k, s, d, padding, size, (c_in, c_out, groups), bias in grid_cases():
        torch.manual_seed(0)
        conv = PartialConv2d(c_in, c_out, k, stride=s, padding=padding, dilation=d, groups=groups,
                             bias=bias).double()
        x = torch.randn(2, c_in, *size, dtype=torch.float64, requires_grad=True)
        leaves = [x, *conv.parameters()]
        got = traced_partial_conv(conv, x, conv_pads(conv), torch.float64)
        got_grads = torch.autograd.grad(got.square().sum(), leaves)
        want = naive_partial_conv(x, conv.weight, conv.bias, s, padding, d, groups)[0]
        assert_matches(got.detach(), got_grads, want, leaves)


@pytest.mark.slow  # compiles ResNet-18 twice: ~8 s on 2 cores
def test_resnet18_compiles_without_breaks_and_no_more_graphs_than_zero_padding():
    sizes = [(32, 40), (40, 48), (48, 56), (56, 64), (64, 72)]
    torch.manual_seed(0)
    zeros = resnet18(num_classes=4).double()
    partial = convert_padding(copy.deepcopy(zeros), "partial")
    zero_graphs, zero_breaks, _ = compiled_runs(zeros, "eager", sizes)
    graphs, breaks, runs = compiled_runs(partial, "eager", sizes)
    # before traced.py the plan built from host ints made dynamo specialise on every size: 5 graphs vs 2
    assert (breaks, zero_breaks) == (0, 0)
    assert graphs <= zero_graphs, (graphs, zero_graphs)
    for x, y, grads in runs:  # the eager layer, itself checked against the float64 reference in test_partial_conv
        x.requires_grad_()
        assert_matches(y, grads, partial(x), [x, *partial.parameters()])


@pytest.mark.slow  # four small compiles: ~8 s on 2 cores
def test_strided_dilated_same_and_tf_same_convs_compile_once_for_all_sizes_and_match_reference():
    sizes = [(9, 11), (12, 13), (16, 15), (17, 20), (23, 8)]  # both parities: TensorFlow "same" pads depend on it
    torch.manual_seed(0)
    stack = nn.Sequential(create_conv2d(3, 4, 3, stride=2, padding_mode="partial"), nn.ReLU(),
                          create_conv2d(4, 6, 4, padding="same", dilation=2, groups=2, padding_mode="partial"))
    tf_same = PartialConv2dSame(3, 4, 3, stride=2, padding=0)
    graphs = {}
    for name, model in [("stack", stack), ("tf_same", tf_same)]:
        graphs[name], breaks, runs = compiled_runs(model.double(), "aot_eager", sizes)
        assert breaks == 0
        for x, y, grads in runs:
            x.requires_grad_()
            if name == "stack":
                first, second = stack[0], stack[2]
                hidden = naive_partial_conv(x, first.weight, first.bias, (2, 2), (1, 1), (1, 1), 1)[0].relu()
                want = naive_partial_conv(hidden, second.weight, second.bias, (1, 1), "same", (2, 2), 2)[0]
            else:
                pads = (*tf_same_amounts(x.shape[2], 3, 2, 1), *tf_same_amounts(x.shape[3], 3, 2, 1))
                want = naive_partial_conv(x, tf_same.weight, tf_same.bias, (2, 2), pads, (1, 1), 1)[0]
            assert_matches(y, grads, want, [x, *model.parameters()])
    zero_stack = convert_padding(copy.deepcopy(stack), "zeros")
    timm_same = Conv2dSame(3, 4, 3, stride=2).double()  # the zero-padding layer PartialConv2dSame converts from
    assert graphs["stack"] <= compiled_runs(zero_stack, "eager", sizes)[0]
    assert graphs["tf_same"] <= compiled_runs(timm_same, "eager", sizes)[0]
