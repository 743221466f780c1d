"""PartialConv2d against the naive float64 reference of seg.nn.reference (unfold + average over valid taps)."""
import copy
import pickle

import pytest
import torch
from torch import nn

import seg.nn.partial_conv as pc
from seg.nn import PaddingError, PartialConv2d, create_conv2d
from seg.nn.reference import grid_cases, naive_grads, naive_partial_conv


def build(k, s, d, padding, g, bias):
    torch.manual_seed(0)
    c_in, c_out, groups = g
    conv = PartialConv2d(c_in, c_out, k, stride=s, padding=padding, dilation=d, groups=groups, bias=bias)
    with torch.no_grad():
        if bias:
            conv.bias.uniform_(-1, 1)
    return conv.double()


@pytest.mark.parametrize("case", grid_cases(), ids=str)
def test_matches_naive_reference(case):
    k, s, d, padding, size, g, bias = case
    conv = build(k, s, d, padding, g, bias)
    x = torch.randn(2, g[0], *size, dtype=torch.float64)
    want, _ = naive_partial_conv(x, conv.weight, conv.bias, s, padding, d, g[2])
    with torch.no_grad():
        got_inference = conv(x)
    got_train = conv(x.requires_grad_())  # the autograd path re-weights differently
    torch.testing.assert_close(got_inference, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_train, want, rtol=1e-12, atol=1e-12)


def test_ratio_values_of_3x3():
    conv = PartialConv2d(1, 1, 3, padding=1, bias=False).double()
    with torch.no_grad():
        conv.weight.fill_(1.0)
        y = conv(torch.ones(1, 1, 5, 7, dtype=torch.float64))
    # all-ones input: zero padding gives S, partial padding rescales every window to the full 9
    assert torch.equal(y, torch.full_like(y, 9.0))


def random_mask(b, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(b, 1, h, w, generator=g) > 0.3).double()
    mask[:, :, 1:h - 1, 2:w - 1] = 0  # a big hole: some windows lie wholly inside it
    return mask


@pytest.mark.parametrize("case", grid_cases(40, seed=1), ids=str)
def test_mask_mode_matches_naive_reference(case):
    k, s, d, padding, size, g, bias = case
    conv = build(k, s, d, padding, g, bias)
    x = torch.randn(2, g[0], *size, dtype=torch.float64)
    for mask in (random_mask(2, *size, seed=3), random_mask(1, *size, seed=4)):
        want_y, want_m = naive_partial_conv(x, conv.weight, conv.bias, s, padding, d, g[2], mask=mask)
        y, m = conv(x, mask)
        torch.testing.assert_close(y, want_y, rtol=1e-12, atol=1e-12)
        assert torch.equal(m, want_m.expand_as(m) if m.shape[0] == want_m.shape[0] else want_m[:1])


def test_mask_mode_has_windows_entirely_in_hole():
    conv = build((3, 3), (1, 1), (1, 1), 1, (2, 2, 1), True)
    mask = torch.ones(1, 1, 12, 12, dtype=torch.float64)
    mask[..., 2:10, 2:10] = 0
    y, m = conv(torch.randn(1, 2, 12, 12, dtype=torch.float64), mask)
    assert m[0, 0, 5, 5] == 0 and torch.all(y[0, :, 5, 5] == 0)  # no valid tap: output 0, not bias
    assert m[0, 0, 2, 2] == 1  # corner of the hole still sees the valid ring


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.slow
def test_gradcheck(masked, backward_strategy):
    conv = build((3, 3), (2, 1), (1, 2), (2, 1), (2, 3, 1), True)
    x = torch.randn(1, 2, 7, 6, dtype=torch.float64, requires_grad=True)
    mask = random_mask(1, 7, 6, seed=5)

    def fn(inp, weight, bias):
        args = (inp, mask) if masked else (inp,)
        out = torch.func.functional_call(conv, {"weight": weight, "bias": bias}, args)
        return out[0] if masked else out

    params = (x, conv.weight.detach().clone().requires_grad_(), conv.bias.detach().clone().requires_grad_())
    assert torch.autograd.gradcheck(fn, params)


def conv_grads(conv, x, gy):
    """Gradients of sum(conv(x) * gy) with respect to x, weight and bias through PartialConv2d."""
    leaves = [x] + [p for p in (conv.weight, conv.bias) if p is not None]
    return torch.autograd.grad(conv(x), leaves, gy)


@pytest.fixture(params=["strips", "copy", "fullmap"])
def backward_strategy(request, monkeypatch):
    """Force backward to correct the bands by strip convolutions, or by scaling a copy of the gradient, or
    re-weight by the full-size maps (forward and backward)."""
    monkeypatch.setattr(pc, "STRIP_WORK_LIMIT", float("inf") if request.param == "strips" else 0)
    old = pc.set_reweight_strategy("fullmap" if request.param == "fullmap" else "bands")
    yield request.param
    pc.set_reweight_strategy(old)


@pytest.mark.parametrize("case", grid_cases(), ids=str)
@pytest.mark.slow
def test_gradients_match_naive_reference(case, backward_strategy):
    k, s, d, padding, size, g, bias = case
    conv = build(k, s, d, padding, g, bias)
    x = torch.randn(2, g[0], *size, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        gy = torch.randn_like(conv(x))
    gy_before = gy.clone()
    want = naive_grads(x, conv.weight, conv.bias, gy, s, padding, d, g[2])
    got = conv_grads(conv, x, gy)
    assert torch.equal(gy, gy_before)  # the incoming gradient may be shared: never written to
    for name, a, b in zip(("x", "weight", "bias"), got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m, name=name: f"grad {name}: {m}")


@pytest.mark.parametrize("case", grid_cases(12, seed=2), ids=str)
def test_parameter_gradients_without_input_gradient(case, backward_strategy):
    # the first conv of a network sees an image that needs no gradient
    k, s, d, padding, size, g, bias = case
    conv = build(k, s, d, padding, g, bias)
    x = torch.randn(1, g[0], *size, dtype=torch.float64)
    with torch.no_grad():
        gy = torch.randn_like(conv(x))
    want = naive_grads(x, conv.weight, conv.bias, gy, s, padding, d, g[2])[1:]
    params = [p for p in (conv.weight, conv.bias) if p is not None]
    got = torch.autograd.grad(conv(x), params, gy)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_gradient_through_shared_output():
    # y feeds two branches: each branch's gradient must reach the conv unchanged
    conv = build((3, 3), (1, 1), (1, 1), 1, (2, 3, 1), True)
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    y = conv(x)
    gx = torch.autograd.grad((y * 2).sum() + y.square().sum(), x)[0]
    gy = 2 + 2 * naive_partial_conv(x, conv.weight, conv.bias, (1, 1), 1, (1, 1), 1)[0]
    torch.testing.assert_close(gx, naive_grads(x, conv.weight, conv.bias, gy, (1, 1), 1, (1, 1), 1)[0],
                               rtol=1e-10, atol=1e-10)


@pytest.fixture
def fresh_plans():
    """An empty process-wide plan cache (other tests fill it)."""
    pc.clear_plan_cache()
    yield pc._plans
    pc.clear_plan_cache()


@pytest.fixture
def plan_counter(monkeypatch, fresh_plans):
    calls = []
    real = pc.axis_bands

    def counting(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(pc, "axis_bands", counting)
    return calls


def test_cache_keyed_on_size_not_batch(plan_counter):
    conv = build((3, 3), (1, 1), (1, 1), 1, (2, 2, 1), True)
    with torch.no_grad():
        for b in (4, 1, 3, 4):
            conv(torch.randn(b, 2, 10, 12, dtype=torch.float64))
        assert len(plan_counter) == 2  # one plan (rows + cols) for all batch sizes
        conv(torch.randn(1, 2, 11, 12, dtype=torch.float64))
        assert len(plan_counter) == 4  # a new size computes a new plan


def test_alternating_sizes_stay_correct(plan_counter):
    conv = build((5, 5), (2, 2), (1, 1), 2, (2, 3, 1), True)
    sizes = [(10, 12), (7, 9), (16, 5)]
    for _ in range(3):
        for b, size in enumerate(sizes, start=1):
            x = torch.randn(b, 2, *size, dtype=torch.float64)
            with torch.no_grad():
                torch.testing.assert_close(conv(x), naive_partial_conv(x, conv.weight, conv.bias, (2, 2), 2,
                                                                       (1, 1), 1)[0], rtol=1e-12, atol=1e-12)
    assert len(plan_counter) == 2 * len(sizes)  # every size kept alive at once


def test_convs_of_one_geometry_share_one_plan(plan_counter):
    first = build((3, 3), (1, 1), (1, 1), 1, (2, 3, 1), True)
    second = build((3, 3), (1, 1), (1, 1), 1, (3, 5, 1), False)  # other channels and weights, same geometry
    strided = build((3, 3), (2, 2), (1, 1), 1, (2, 3, 1), True)
    x = torch.randn(2, 2, 9, 10, dtype=torch.float64)
    with torch.no_grad():
        first(x)
        y = second(torch.randn(1, 3, 9, 10, dtype=torch.float64))
        assert len(plan_counter) == 2 and y.shape == (1, 5, 9, 10)
        got = strided(x)
    assert len(plan_counter) == 4  # a new stride is a new geometry
    torch.testing.assert_close(got, naive_partial_conv(x, strided.weight, strided.bias, (2, 2), 1, (1, 1), 1)[0],
                               rtol=1e-12, atol=1e-12)


def test_cache_bounded_and_not_in_state_dict(plan_counter, monkeypatch):
    monkeypatch.setattr(pc, "PLAN_CACHE_SIZE", 4)
    conv = build((3, 3), (1, 1), (1, 1), 1, (2, 2, 1), False)
    with torch.no_grad():
        for h in range(5, 5 + 8):
            conv(torch.randn(1, 2, h, 6, dtype=torch.float64))
        assert len(pc._plans) == 4 and len(plan_counter) == 16
        conv(torch.randn(1, 2, 5, 6, dtype=torch.float64))  # the oldest size was evicted: built again
        assert len(plan_counter) == 18
    assert set(conv.state_dict()) == {"weight"}


def test_deepcopy_and_pickle_carry_no_plan_and_still_work():
    conv = build((3, 3), (1, 1), (1, 1), 1, (2, 2, 1), True)
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        want = conv(x)
        for clone in (copy.deepcopy(conv), pickle.loads(pickle.dumps(conv))):
            assert not any(isinstance(v, pc.BorderPlan) for v in vars(clone).values())
            torch.testing.assert_close(clone(x), want, rtol=0, atol=0)


def test_cache_follows_device_and_dtype(fresh_plans):
    conv = build((3, 3), (1, 1), (1, 1), 1, (2, 2, 1), True)
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        want = conv(x)
        got = conv.float()(x.float())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6)
    assert {k[3] for k in fresh_plans} == {torch.float64, torch.float32}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_is_finite_and_close(dtype):
    conv = build((3, 3), (1, 1), (4, 4), 4, (3, 4, 1), True)
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64) * 50
    want, _ = naive_partial_conv(x, conv.weight, conv.bias, (1, 1), 4, (4, 4), 1)
    with torch.no_grad():
        got = conv.to(dtype)(x.to(dtype))
        got_masked, _ = conv(x.to(dtype), torch.ones(1, 1, 9, 9, dtype=dtype))
    for out in (got, got_masked):
        assert out.dtype == dtype and torch.isfinite(out).all()
        torch.testing.assert_close(out.double(), want, rtol=2e-2, atol=0.5)


def test_autocast_bf16_keeps_ratio_in_float32(fresh_plans):
    conv = build((3, 3), (1, 1), (1, 1), 1, (3, 4, 1), True).float()
    x = torch.randn(1, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
        y_masked, _ = conv(x, torch.ones(1, 1, 8, 8))
    assert all(torch.isfinite(t).all() for t in (y, y_masked))
    for _, _, ratio, _ in next(iter(fresh_plans.values())).regions:
        assert ratio.dtype == torch.float32


def test_rejects_bad_mask_shape():
    conv = build((3, 3), (1, 1), (1, 1), 1, (2, 2, 1), True)
    with pytest.raises(ValueError, match="mask must be"):
        conv(torch.randn(1, 2, 6, 6, dtype=torch.float64), torch.ones(1, 2, 6, 6, dtype=torch.float64))


@pytest.mark.parametrize("padding, dilation", [(2, (2, 1)), ("same", (1, 1))])  # "same": asymmetric here
def test_autocast_bf16_backward_close_to_reference(padding, dilation, backward_strategy):
    conv = build((4, 3), (1, 1), dilation, padding, (3, 4, 1), True).float()
    x = torch.randn(2, 3, 10, 9, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    assert y.dtype == torch.bfloat16
    gy = torch.randn(y.shape)
    got = torch.autograd.grad(y, (x, conv.weight, conv.bias), gy.bfloat16())
    want = naive_grads(x, conv.weight, conv.bias, gy, (1, 1), padding, dilation, 1)
    for a, b, t in zip(got, want, (x, conv.weight, conv.bias)):
        assert a.dtype == t.dtype and torch.isfinite(a).all()
        torch.testing.assert_close(a.double(), b, rtol=3e-2, atol=3e-2 * b.abs().max().item())


@pytest.fixture
def fullmap():
    """Re-weight by the cached full-size ratio map instead of the in-place border bands."""
    old = pc.set_reweight_strategy("fullmap")
    yield
    pc.set_reweight_strategy(old)


@pytest.mark.parametrize("case", grid_cases(80, seed=3), ids=str)
@pytest.mark.slow
def test_fullmap_strategy_matches_naive_reference(case, fullmap):
    # inference path (no autograd); the gradients of the full map run over the whole grid through the
    # backward_strategy fixture
    k, s, d, padding, size, g, bias = case
    conv = build(k, s, d, padding, g, bias)
    x = torch.randn(2, g[0], *size, dtype=torch.float64)
    want, _ = naive_partial_conv(x, conv.weight, conv.bias, s, padding, d, g[2])
    with torch.no_grad():
        torch.testing.assert_close(conv(x), want, rtol=1e-12, atol=1e-12)


def test_fullmap_under_bf16_autocast_keeps_float32_ratio(fullmap, fresh_plans):
    conv = build((3, 3), (1, 1), (2, 2), 2, (3, 4, 1), True).float()
    x = torch.randn(2, 3, 9, 9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    assert y.dtype == torch.bfloat16
    ratio, valid = next(iter(fresh_plans.values())).full_maps()
    assert ratio.dtype == valid.dtype == torch.float32
    want, _ = naive_partial_conv(x, conv.weight, conv.bias, (1, 1), 2, (2, 2), 1)
    torch.testing.assert_close(y.double(), want, rtol=3e-2, atol=3e-2 * want.abs().max().item())


@pytest.mark.parametrize("triton", [False, True])
def test_auto_strategy_picks_by_device_and_size(monkeypatch, triton):
    monkeypatch.setattr(pc, "CUDA_FULLMAP_MAX_NUMEL", 1000)
    monkeypatch.setattr(pc.border_kernel, "runs_on", lambda device: triton and device.type == "cuda")
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert pc.choose_reweight(cpu, 10) == "bands"  # CPU: always the bands
    assert pc.choose_reweight(cuda, 1000) == ("border" if triton else "fullmap")
    assert pc.choose_reweight(cuda, 1001) == ("border" if triton else "bands")
    old = pc.set_reweight_strategy("bands")
    try:
        assert pc.choose_reweight(cuda, 10) == "bands"
        pc.set_reweight_strategy("border")
        if triton:
            assert pc.choose_reweight(cuda, 10) == "border"
        with pytest.raises(PaddingError, match="'border' needs a CUDA GPU .* and Triton; got a cpu tensor"):
            pc.choose_reweight(cpu, 10)
    finally:
        pc.set_reweight_strategy(old)
    with pytest.raises(ValueError, match="reweight strategy"):
        pc.set_reweight_strategy("fast")


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the plan is built for the traced size
def test_jit_trace_with_autograd_matches_eager_and_reference():
    torch.manual_seed(0)
    model = nn.Sequential(create_conv2d(3, 5, 3, padding_mode="partial"), nn.ReLU(),
                          create_conv2d(5, 4, 4, padding="same", padding_mode="partial")).double()  # asymmetric
    x = torch.randn(2, 3, 11, 13, dtype=torch.float64, requires_grad=True)
    traced = torch.jit.trace(model, x)  # autograd on: used to fail inside the custom autograd.Function
    conv1, conv2 = model[0], model[2]
    hidden = naive_partial_conv(x, conv1.weight, conv1.bias, (1, 1), (1, 1), (1, 1), 1)[0].relu()
    want = naive_partial_conv(hidden, conv2.weight, conv2.bias, (1, 1), "same", (1, 1), 1)[0]
    got = traced(x)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got, model(x))
    grads = torch.autograd.grad(got.square().sum(), [x, *model.parameters()])
    ref = torch.autograd.grad(want.square().sum(), [x, *model.parameters()])
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r)
