"""The border kernel (seg/nn/border_kernel.py) on CPU tensors through Triton's interpreter.

Run by tests/test_border_kernel.py in ONE subprocess with ``TRITON_INTERPRET=1`` (it must be set before the
``@triton.jit`` functions are defined, i.e. before seg is imported) and ``SEG_BORDER_KERNEL_ON_CPU=1``, so that
``PartialConv2d`` takes its "border" strategy on the CPU. Every check compares with an independent float64
reference (seg.nn.reference, or ratios counted here by unfolding a ones mask). Prints one JSON object:
``{"counts": {check: cases}, "failures": [one line each], "sync_ops": [...]}``.
"""
import argparse
import collections
import json

import torch
import torch.nn.functional as F
from test_partial_conv import build, grid_cases
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import seg.nn.partial_conv as pc
from seg.nn import border_kernel, create_conv2d, set_reweight_strategy
from seg.nn.reference import naive_grads, naive_partial_conv, pads_of

#: Ops that wait for the host or hand it a value: a steady-state forward + backward must issue none.
SYNC_OPS = ("aten._local_scalar_dense", "aten.item", "aten.nonzero", "aten.lift_fresh", "aten.lift_fresh_copy",
            "aten.scalar_tensor")
#: Significand bits (with the implicit one) and smallest step of the half-precision types.
HALF_BITS = {torch.bfloat16: (8, 2.0 ** -133), torch.float16: (11, 2.0 ** -24)}
#: Calls of the kernels' entry points (see :func:`count_kernel_calls`).
CALLS: collections.Counter = collections.Counter()


def count_kernel_calls():
    """Count calls of the kernels' entry points, so a check can tell the kernel path ran and not a fallback."""
    def counting(name, real):
        def counted(*args, **kwargs):
            CALLS[name] += 1
            return real(*args, **kwargs)
        return counted

    for name in ("reweight_band_", "scale_band_", "restore_band_"):
        setattr(border_kernel, name, counting(name, getattr(border_kernel, name)))


def calls_since(before):
    return dict(CALLS - before)


class SyncRecorder(TorchDispatchMode):
    """Records every op that syncs with the host: :data:`SYNC_OPS`, and copies between two devices."""

    def __init__(self):
        super().__init__()
        self.found = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = str(func.overloadpacket) if hasattr(func, "overloadpacket") else str(func)
        devices = {t.device for t in (*args, *kwargs.values(), *(out if isinstance(out, (list, tuple)) else (out,)))
                   if isinstance(t, torch.Tensor)}
        if name.replace("aten::", "aten.") in SYNC_OPS or len(devices) > 1:
            self.found.append(f"{func} on {sorted(map(str, devices))}")
        return out


def ratio_map(size, kernel, stride, padding, dilation):
    """Float64 ``(K / S, [S > 0])`` maps (Ho, Wo), counting each window's valid taps by unfolding a ones mask."""
    pt, pb, pl, pr = pads_of(padding, kernel, dilation)
    ones = F.pad(torch.ones(1, 1, *size, dtype=torch.float64), (pl, pr, pt, pb))
    taps = F.unfold(ones, kernel, dilation=dilation, stride=stride).sum(1)
    ho = (size[0] + pt + pb - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    taps = taps.view(ho, -1)
    valid = (taps > 0).double()
    return kernel[0] * kernel[1] / taps.clamp(min=1) * valid, valid


def max_ulps(got, want, dtype):
    """Largest ``|got - want|`` in units of ``dtype``'s last place at ``want`` (float64)."""
    bits, tiny = HALF_BITS[dtype]
    _, exponent = torch.frexp(want)
    ulp = torch.ldexp(torch.ones_like(want), exponent - bits).clamp(min=tiny)
    return ((got.double() - want).abs() / ulp).max().item()


def first_cases(n, seed):
    """The first ``n`` cases of the layer tests' grid for ``seed`` (``grid_cases`` reads 0 as "all")."""
    return grid_cases(n, seed=seed) if n else []


def layer_grads(conv, x, gy):
    """``(conv(x), its gradients)`` for the incoming gradient ``gy``, with respect to x, weight and bias."""
    leaves = [t for t in (x, conv.weight, conv.bias) if t is not None]
    out = conv(x)
    return out, torch.autograd.grad(out, leaves, gy)


def check_grid(failures, counts, n, alternate):
    """Float64 outputs and every gradient against the reference on the first ``n`` cases of the layer tests'
    grid, NCHW and channels_last (``alternate``: one layout per case, in turn); the caller's gradient unchanged."""
    layouts = (torch.contiguous_format, torch.channels_last)
    for index, case in enumerate(first_cases(n, seed=0)):
        k, s, d, padding, size, g, bias = case
        for layout in (layouts[index % 2],) if alternate else layouts:
            conv = build(k, s, d, padding, g, bias).to(memory_format=layout)
            x = torch.randn(2, g[0], *size, dtype=torch.float64).to(memory_format=layout)
            want = naive_partial_conv(x, conv.weight, conv.bias, s, padding, d, g[2])[0]
            gy = torch.randn(want.shape, dtype=torch.float64).contiguous(memory_format=layout)
            gy_before = gy.clone()
            before = CALLS.copy()
            with torch.no_grad():
                inference = conv(x)
            out, got = layer_grads(conv, x.requires_grad_(), gy)
            wanted = naive_grads(x, conv.weight, conv.bias, gy, s, padding, d, g[2])
            tag = f"{case} {layout}"
            has_band = bool(conv._plan(*size, x.device, x.dtype).regions)
            expected = {"reweight_band_": 2, "scale_band_": 1, "restore_band_": 1} if has_band else {}
            if calls_since(before) != expected:
                failures.append(f"{tag}: kernel calls {calls_since(before)}, expected {expected}")
            for name, a, b in (("inference", inference, want), ("output", out, want),
                               *zip(("grad x", "grad weight", "grad bias"), got, wanted)):
                if not torch.allclose(a, b, rtol=1e-10, atol=1e-10):
                    failures.append(f"{tag}: {name} off by {(a - b).abs().max().item():.3g}")
            if not torch.equal(gy, gy_before) or gy.stride() != gy_before.stride():
                failures.append(f"{tag}: the caller's gradient changed")
            counts["float64 grid"] = counts.get("float64 grid", 0) + 1


def check_special_gradients(failures, counts, n):
    """Parameter gradients without an input gradient, an expanded (non-dense) incoming gradient, double backward."""
    for case in first_cases(n, seed=2):
        k, s, d, padding, size, g, bias = case
        conv = build(k, s, d, padding, g, bias)
        x = torch.randn(1, g[0], *size, dtype=torch.float64)
        want_y = naive_partial_conv(x, conv.weight, conv.bias, s, padding, d, g[2])[0]
        gy = torch.randn_like(want_y)
        params = [p for p in (conv.weight, conv.bias) if p is not None]
        got = torch.autograd.grad(conv(x), params, gy)
        for a, b in zip(got, naive_grads(x, conv.weight, conv.bias, gy, s, padding, d, g[2])[1:]):
            if not torch.allclose(a, b, rtol=1e-10, atol=1e-10):
                failures.append(f"{case}: parameter gradient without input gradient off")
        xg = x.clone().requires_grad_()
        before = CALLS.copy()
        got = torch.autograd.grad(conv(xg).sum(), [xg, *params])  # sum() hands back an expanded gradient
        if calls_since(before).get("scale_band_"):
            failures.append(f"{case}: an expanded gradient was scaled in place")
        for a, b in zip(got, naive_grads(x, conv.weight, conv.bias, torch.ones_like(want_y), s, padding, d, g[2])):
            if not torch.allclose(a, b, rtol=1e-10, atol=1e-10):
                failures.append(f"{case}: gradient from sum() (expanded, falls back to a copy) off")
        check_double_backward(failures, case, conv, x, gy)
        counts["special gradients"] = counts.get("special gradients", 0) + 1


def check_double_backward(failures, case, conv, x, gy):
    """With ``create_graph`` the incoming gradient is part of the graph being built: backward must not write to
    it (the conv backward records it), so the weight's gradient of ``|d out / d x|^2`` matches the reference."""
    k, s, d, padding, size, g, bias = case
    xg = x.clone().requires_grad_()
    grad_x = torch.autograd.grad(conv(xg), xg, gy, create_graph=True)[0]
    got = torch.autograd.grad(grad_x.square().sum(), conv.weight)[0]
    leaves = [t.detach().clone().requires_grad_() for t in (x, conv.weight)]
    out = naive_partial_conv(leaves[0], leaves[1], conv.bias, s, padding, d, g[2])[0]
    ref_x = torch.autograd.grad(out, leaves[0], gy, create_graph=True)[0]
    want = torch.autograd.grad(ref_x.square().sum(), leaves[1])[0]
    if not torch.allclose(got, want, rtol=1e-10, atol=1e-10):
        failures.append(f"{case}: double backward off by {(got - want).abs().max().item():.3g}")


def check_empty_batch(failures, counts):
    """A batch of 0 images: empty output, zero parameter gradients (the kernels launch no program)."""
    for layout in (torch.contiguous_format, torch.channels_last):
        conv = build((3, 3), (1, 1), (1, 1), 1, (2, 3, 1), True)
        x = torch.randn(0, 2, 7, 6, dtype=torch.float64).to(memory_format=layout).requires_grad_()
        y = conv(x)
        grads = torch.autograd.grad(y, [x, conv.weight, conv.bias], torch.randn_like(y))
        if y.shape != (0, 3, 7, 6) or grads[0].shape != x.shape or any(t.abs().sum() != 0 for t in grads[1:]):
            failures.append(f"empty batch {layout}: output {tuple(y.shape)}, gradients {grads}")
        counts["empty batch"] = counts.get("empty batch", 0) + 1


def check_half_precision_kernels(failures, counts, n):
    """bf16 / fp16: the kernels' outputs within 1 ulp of the float64 result of the same inputs (the interpreter
    rounds float32 -> bf16 by truncation, hence 1 ulp rather than half); the restored band bit for bit."""
    done = 0
    for case in grid_cases(seed=5):  # the first n cases that have a band
        k, s, d, padding, size, g, bias = case
        rows, cols = build(k, s, d, padding, g, bias)._geometry(*size)
        plan = pc.shared_plan(rows, cols, torch.device("cpu"), torch.float32)
        if done == n:
            break
        if not plan.regions:
            continue
        done += 1
        ratio, valid = ratio_map(size, k, s, padding, d)
        for dtype in HALF_BITS:
            for layout in (torch.contiguous_format, torch.channels_last):
                y = (torch.randn(2, g[1], *plan.out_size) * 8).to(dtype).contiguous(memory_format=layout)
                b = torch.randn(g[1]) if bias else None
                want = y.double() * ratio + (0 if b is None else b.double().view(-1, 1, 1) * (valid - ratio))
                got = border_kernel.reweight_band_(y.clone(), plan.bands, plan.tables, b)
                tag = f"{case} {dtype} {layout}"
                if max_ulps(got, want, dtype) > 1:
                    failures.append(f"{tag}: forward kernel {max_ulps(got, want, dtype)} ulp off")
                grad = y.clone()
                saved, delta = border_kernel.scale_band_(grad, plan.bands, plan.tables, bias_delta=True)
                if max_ulps(grad, y.double() * ratio, dtype) > 1:
                    failures.append(f"{tag}: scaled gradient {max_ulps(grad, y.double() * ratio, dtype)} ulp off")
                want_delta = (y.double() * valid - grad.double()).sum((0, 2, 3))
                if not torch.allclose(delta.double(), want_delta, rtol=1e-5, atol=1e-4):
                    failures.append(f"{tag}: bias delta off by {(delta.double() - want_delta).abs().max().item()}")
                border_kernel.restore_band_(grad, plan.bands, saved)
                if not torch.equal(grad, y):
                    failures.append(f"{tag}: gradient band not restored bit for bit")
                counts["half kernels"] = counts.get("half kernels", 0) + 1


def check_autocast_layer(failures, counts, n):
    """The layer under bf16 / fp16 autocast (fp32 parameters, as training runs) close to the float64 reference."""
    for case in first_cases(n, seed=6):
        k, s, d, padding, size, g, bias = case
        for dtype in HALF_BITS:
            conv = build(k, s, d, padding, g, bias).float()
            x = torch.randn(2, g[0], *size, requires_grad=True)
            with torch.autocast("cpu", dtype=dtype):
                y = conv(x)
            want = naive_partial_conv(x, conv.weight, conv.bias, s, padding, d, g[2])[0]
            gy = torch.randn(want.shape)
            got = torch.autograd.grad(y, [t for t in (x, conv.weight, conv.bias) if t is not None], gy.to(dtype))
            for a, b in ((y, want), *zip(got, naive_grads(x, conv.weight, conv.bias, gy, s, padding, d, g[2]))):
                if not torch.allclose(a.double(), b, rtol=3e-2, atol=3e-2 * b.abs().max().item()):
                    failures.append(f"{case} {dtype}: autocast layer off by {(a.double() - b).abs().max().item()}")
            counts["autocast layer"] = counts.get("autocast layer", 0) + 1


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(create_conv2d(3, 8, 3, padding_mode="partial"), nn.BatchNorm2d(8), nn.ReLU(),
                         create_conv2d(8, 8, 3, stride=2, groups=8, padding_mode="partial"),
                         create_conv2d(8, 4, 4, padding="same", padding_mode="partial"))  # asymmetric


def sync_ops_of_steps(model, x, steps=2) -> list[list[str]]:
    """Sync ops recorded in each of ``steps`` forward + backward passes of ``model`` on ``x``."""
    found = []
    for _ in range(steps):
        with SyncRecorder() as recorder:
            model(x).square().sum().backward()
        found.append(recorder.found)
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=160, help="layer grid cases (float64, outputs and gradients)")
    parser.add_argument("--alternate", action="store_true", help="one layout per grid case instead of both")
    parser.add_argument("--special", type=int, default=16, help="cases of parameter-only and expanded gradients")
    parser.add_argument("--half", type=int, default=24, help="cases of the bf16 / fp16 kernels against float64")
    parser.add_argument("--autocast", type=int, default=12, help="cases of the layer under bf16 / fp16 autocast")
    args = parser.parse_args()
    assert border_kernel.ON_CPU, "run with TRITON_INTERPRET=1 SEG_BORDER_KERNEL_ON_CPU=1"
    set_reweight_strategy("border")
    count_kernel_calls()
    failures, counts = [], {}
    torch.manual_seed(0)
    check_grid(failures, counts, args.grid, args.alternate)
    check_special_gradients(failures, counts, args.special)
    check_empty_batch(failures, counts)
    check_half_precision_kernels(failures, counts, args.half)
    check_autocast_layer(failures, counts, args.autocast)
    pc.clear_plan_cache()  # the first step below builds its plans: that must not sync either
    sync = sync_ops_of_steps(small_model(), torch.randn(2, 3, 13, 11, requires_grad=True))
    print(json.dumps({"counts": counts, "failures": failures, "sync_ops": sync}))


if __name__ == "__main__":
    main()
