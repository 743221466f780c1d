"""Partial-convolution based padding (Liu et al., 2018) as a drop-in ``nn.Conv2d``.

``y = conv2d(x, W, zero padding) * r + b``, with ``r = K / S`` and ``S`` the number of taps of each
window that fall inside the image (arXiv 1811.11718, eq. 1; docs/partial_padding.md). ``r`` is 1 except
in thin bands along the borders. Its tables are built on the device (:func:`seg.nn.ratio.axis_ratio`) once
per conv geometry and shared by every conv of that geometry (:func:`shared_plan`): a batch-size change, or
another conv of the same shape, never recomputes them, and no forward or backward waits for the host.

Three ways to apply ``r`` (:func:`set_reweight_strategy`): ``"bands"`` scales the border blocks of the
biased conv output in place (O(perimeter) memory traffic, but up to 8 small operations per conv);
``"fullmap"`` runs the conv without bias and then ``y * r + b * valid`` over the whole output in one
in-place pass with cached full-size maps (one kernel; NVIDIA's reference layer needs three and rebuilds its
map on every shape change); ``"border"`` re-weights the band alone with one Triton kernel
(:mod:`seg.nn.border_kernel`; CUDA only). On a CPU the bands always win. On a GPU ``"auto"`` takes the border
kernel when Triton imports, else the full map for outputs of at most ``CUDA_FULLMAP_MAX_NUMEL`` elements
(measured by ``bench/gpu_check.py``).
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from . import border_kernel
from .ratio import AxisBands, PaddingError, axis_bands, axis_ratio
from .traced import traced_partial_conv

#: How many conv geometries (input size, kernel, stride, padding, dilation, device, ratio dtype) keep their
#: plans; every conv of one geometry shares one. A network has a few dozen; multi-scale and tiled inference
#: multiply that by the sizes they switch between.
PLAN_CACHE_SIZE = 256

#: Backward corrects the bands with strip convolutions (no gradient copy) while
#: ``band outputs * C_in/groups * K * (gradients wanted of x and weight) < STRIP_WORK_LIMIT * output area``;
#: above that the strip convolutions cost more than copying the gradient once. Calibrated on one CPU
#: thread (strip MACs ~0.03 ns, copied gradient elements 0.4-1.6 ns): VGG's first two convs take strips.
#: Strips for every conv made VGG16-BN / ResNet-50 forward+backward 16-22% slower than copying.
STRIP_WORK_LIMIT = 32

#: Re-weighting strategies; "auto" chooses per device type and output size.
REWEIGHT_STRATEGIES = ("auto", "bands", "fullmap", "border")

#: With "auto" on CUDA, outputs of at most this many elements (B * C * Ho * Wo) take the fused full-map pass
#: instead of the in-place band updates. Measured on an H200 (bench/gpu_check.py, BENCHMARKS.md GPU section):
#: the full map was faster at every size of the layer sweep (0.66x the bands' time at 12.5k elements, 0.94x
#: at 411M, the largest measured, kept as the bound) and in 4 of the 6 Table 1 rows (VGG16-BN forward 1.015 vs
#: 1.176 of zero padding's time; ResNet-50 forward 1.042 vs 1.038 and first call 1.446 vs 1.363 went to the
#: bands); beyond the measured range the bands, whose traffic is O(perimeter), stay.
CUDA_FULLMAP_MAX_NUMEL = 411_041_792

_strategy = "auto"

#: What a ``torch.compile``d PartialConv2d runs (:func:`set_compile_path`): "plain" differentiable torch ops
#: (:mod:`seg.nn.traced`; inductor fuses the re-weighting into the neighbouring ops) or "custom_op", the eager
#: layer's maths behind one registered operator (:mod:`seg.nn.custom_op`; opaque to inductor, no re-tracing).
COMPILE_PATHS = ("plain", "custom_op")

_compile_path = "plain"


def set_reweight_strategy(strategy: str) -> str:
    """Choose how PartialConv2d applies its ratio: "auto" (default), "bands", "fullmap" or "border" (CUDA tensors
    with Triton only: a conv on another device then raises PaddingError); returns the old one."""
    global _strategy
    if strategy not in REWEIGHT_STRATEGIES:
        raise PaddingError(f"reweight strategy must be one of {REWEIGHT_STRATEGIES}, got {strategy!r}")
    old, _strategy = _strategy, strategy
    return old


def set_compile_path(path: str) -> str:
    """Choose what PartialConv2d runs under ``torch.compile``: one of :data:`COMPILE_PATHS` ("plain", the default,
    or "custom_op"); returns the old one. ``torch.jit.trace`` always takes the plain ops, ONNX export its own path."""
    global _compile_path
    if path not in COMPILE_PATHS:
        raise PaddingError(f"compile path must be one of {COMPILE_PATHS}, got {path!r}")
    old, _compile_path = _compile_path, path
    return old


def reweight_strategies(device: torch.device) -> tuple[str, ...]:
    """The strategies of :data:`REWEIGHT_STRATEGIES` that can run on ``device`` ("border" needs a CUDA GPU
    Triton generates code for)."""
    return tuple(s for s in REWEIGHT_STRATEGIES if s != "border" or border_kernel.runs_on(device))


def choose_reweight(device: torch.device, numel: int) -> str:
    """The strategy ("bands", "fullmap" or "border") that re-weights an output of ``numel`` elements on ``device``."""
    if _strategy == "border" and not border_kernel.runs_on(device):
        raise PaddingError(f"reweight strategy 'border' needs a CUDA GPU of compute capability >= 7.0 and Triton; "
                           f"got a {device} tensor{'' if border_kernel.HAVE_TRITON else ' and no Triton'}")
    if _strategy != "auto":
        return _strategy
    if device.type != "cuda":
        return "bands"
    if border_kernel.runs_on(device):
        return "border"
    return "fullmap" if numel <= CUDA_FULLMAP_MAX_NUMEL else "bands"


def conv_pads(conv: nn.Conv2d) -> tuple[tuple[int, int], tuple[int, int]]:
    """Zero padding ``((top, bottom), (left, right))`` that ``conv`` applies, resolving "same"/"valid"."""
    if conv.padding == "valid":
        return (0, 0), (0, 0)
    if conv.padding == "same":
        pads = []
        for k, d in zip(conv.kernel_size, conv.dilation):
            total = d * (k - 1)
            pads.append((total // 2, total - total // 2))  # torch puts the odd pixel at the end
        return pads[0], pads[1]
    if isinstance(conv.padding, str):  # nn.Conv2d accepts only "same" and "valid", both handled above
        raise PaddingError(f"unknown conv padding {conv.padding!r}")
    ph, pw = conv.padding
    return (ph, ph), (pw, pw)


def store_padding_mode(conv: nn.Conv2d, mode: str) -> None:
    """Record seg's padding ``mode`` ("zeros", "reflect", "replicate" or "partial") as ``conv.padding_mode``.

    torch types the attribute as its own four modes; seg also stores "partial" there, which only
    :class:`PartialConv2d` (whose forward never hands ``padding_mode`` to torch) carries.
    """
    conv.padding_mode = mode  # type: ignore[assignment]  # seg's modes include "partial", beyond torch's Literal


def tf_same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's "same" padding ``(lo, hi)`` of one axis of length ``size``: just enough for
    ``ceil(size / stride)`` outputs, the odd pixel at the end (as timm's ``Conv2dSame`` pads)."""
    total = max((-(-size // stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _ratio_dtype(dtype: torch.dtype) -> torch.dtype:
    # float64 inputs get a float64 ratio (exact reference checks); everything else float32,
    # also under fp16/bf16 autocast, so the ratio itself is never rounded to half precision
    return torch.float64 if dtype == torch.float64 else torch.float32


class BorderPlan:
    """Where and how to re-weight the output of one conv for one input size.

    ``regions`` is a list of ``(rows, cols, ratio, bias_coef)``: slices of the (Ho, Wo) output and
    the ratio ``r`` and bias coefficient ``valid - r`` on that block (shapes broadcastable to the
    block). Interior outputs (r = 1) are in no region. ``bands`` is ``(top, bottom, left, right)`` and
    ``tables`` the per-axis ``(r_h (Ho,), r_w (Wo,), valid_h (Ho,), valid_w (Wo,))``, built on ``device``.
    """

    def __init__(self, rows: AxisBands, cols: AxisBands, device: torch.device, dtype: torch.dtype):
        self.out_size = (rows.size_out, cols.size_out)
        (rh, vh), (rw, vw) = (axis_ratio(*axis.geometry, axis.size_out, device, dtype) for axis in (rows, cols))
        top, bottom = rows.lead, rows.trail
        left, right = cols.lead, cols.trail
        self.bands = (top, bottom, left, right)
        self.tables = (rh, rw, vh, vw)
        ho, wo = self.out_size
        middle = slice(top, ho - bottom)
        all_cols = slice(0, wo)
        self.regions = []
        self.grad_offsets = []  # per region (r - 1, valid - 1): how its gradients differ from a plain conv's
        for rs, cs in ((slice(0, top), all_cols), (slice(ho - bottom, ho), all_cols),
                       (middle, slice(0, left)), (middle, slice(wo - right, wo))):
            if rs.stop - rs.start <= 0 or cs.stop - cs.start <= 0:
                continue
            ratio = rh[rs, None] * rw[None, cs]
            valid = vh[rs, None] * vw[None, cs]
            self.regions.append((rs, cs, ratio, valid - ratio))
            self.grad_offsets.append((ratio - 1, valid - 1))
        self.band_area = sum((rs.stop - rs.start) * (cs.stop - cs.start) for rs, cs, _, _ in self.regions)
        self._full_maps: tuple[torch.Tensor, torch.Tensor] | None = None  # built on first use

    def full_maps(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(ratio, valid) as full (Ho, Wo) maps (1 off the bands), built once; None when no output is re-weighted."""
        if self._full_maps is None and self.regions:
            rh, rw, vh, vw = self.tables
            self._full_maps = (rh[:, None] * rw[None, :], vh[:, None] * vw[None, :])
        return self._full_maps

    def reweight_bands_(self, y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """Re-weight ``y`` (B, C, Ho, Wo), the zero-padded conv output including bias, in place (bands only)."""
        for rs, cs, ratio, coef in self.regions:
            block = y[:, :, rs, cs]
            block.mul_(ratio)
            if bias is not None:
                block.add_(bias.view(-1, 1, 1) * coef)
        return y

    def reweight_border_(self, y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """:meth:`reweight_bands_` in one Triton kernel over the band (:func:`seg.nn.border_kernel.reweight_band_`);
        ``y`` dense (NCHW or channels_last), on a device :func:`seg.nn.border_kernel.runs_on` accepts."""
        return border_kernel.reweight_band_(y, self.bands, self.tables, bias)

    def reweight_full_(self, y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``y = y * ratio + bias * valid`` in place, in one elementwise pass: ``y`` (B, C, Ho, Wo) is the
        conv output WITHOUT bias. The arithmetic runs in the ratio's float32 and is stored in ``y``'s dtype.
        Only for plans with bands (``fullmap`` is chosen only when ``regions`` is non-empty)."""
        maps = self.full_maps()
        assert maps is not None, "reweight_full_ needs a plan with bands"
        ratio, valid = maps
        if bias is None:
            return torch.mul(y, ratio, out=y)
        return torch.addcmul(bias.view(-1, 1, 1).to(ratio.dtype) * valid, y, ratio, out=y)


Geometry = tuple[int, int, int, int, int, int]  # one axis: (size_in, kernel, stride, pad_lo, pad_hi, dilation)

_plans: OrderedDict[tuple, BorderPlan] = OrderedDict()
_plans_lock = threading.Lock()  # nn.DataParallel runs its replicas' forwards in threads


def shared_plan(rows: Geometry, cols: Geometry, device: torch.device, dtype: torch.dtype) -> BorderPlan:
    """The plan of one conv geometry, from a process-wide LRU cache of ``PLAN_CACHE_SIZE`` plans: every conv of
    that geometry (and every batch size) shares it. ``dtype`` is the ratio's (see :func:`_ratio_dtype`)."""
    key = (rows, cols, device, dtype)
    with _plans_lock:
        plan = _plans.get(key)
        if plan is not None:
            _plans.move_to_end(key)
            return plan
    plan = BorderPlan(axis_bands(*rows), axis_bands(*cols), device, dtype)
    with _plans_lock:
        plan = _plans.setdefault(key, plan)  # another thread may have built it meanwhile: keep one
        if len(_plans) > PLAN_CACHE_SIZE:
            _plans.popitem(last=False)
    return plan


def clear_plan_cache() -> None:
    """Drop every cached plan (tests; or to free their device memory)."""
    with _plans_lock:
        _plans.clear()


def _conv_reweighted(plan: BorderPlan, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     stride, pads, dilation, groups, mode: str) -> torch.Tensor:
    """The partial conv's output without autograd bookkeeping, re-weighted by ``mode`` (see
    :func:`choose_reweight`): "fullmap" runs the conv without bias, then :meth:`BorderPlan.reweight_full_`;
    "bands" and "border" the conv with bias, then :meth:`BorderPlan.reweight_bands_` / ``reweight_border_``."""
    if mode == "fullmap":
        return plan.reweight_full_(F.conv2d(x, weight, None, stride, pads, dilation, groups), bias)
    y = F.conv2d(x, weight, bias, stride, pads, dilation, groups)
    return plan.reweight_border_(y, bias) if mode == "border" else plan.reweight_bands_(y, bias)


def _strip(lo: int, hi: int, size_in: int, kernel: int, stride: int, pad_lo: int, dilation: int):
    """Input rows feeding output positions ``[lo, hi)`` of one axis: ``(slice, zeros_before, zeros_after)``.

    Convolving the slice, zero-padded by the two counts, with padding 0 gives exactly those outputs.
    """
    start = lo * stride - pad_lo
    stop = (hi - 1) * stride + dilation * (kernel - 1) + 1 - pad_lo
    first = min(max(start, 0), size_in)
    last = max(min(stop, size_in), first)
    return slice(first, last), first - start, stop - last


def _autocast_inputs(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` and ``weight`` as autocast would hand them to conv2d, so backward can reuse the very same casts."""
    device = x.device.type
    if not torch.is_autocast_enabled(device):
        return x, weight
    dtype = torch.get_autocast_dtype(device)
    # autocast casts floating tensors except float64 to its low precision for conv
    def low(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype) if t.is_floating_point() and t.dtype != torch.float64 else t
    return low(x), low(weight)


class _PartialConvFunction(torch.autograd.Function):
    """Zero-padded conv plus in-place border re-weighting, with a backward that scales only the bands.

    With ``mode="fullmap"`` the conv runs without bias and one in-place pass applies ``y * r + b * valid``;
    backward then scales one copy of the gradient by the full ratio map (:func:`_full_map_backward`). With
    ``mode="border"`` a Triton kernel re-weights the band of the biased output in place, and backward scales
    the band of ``g`` itself in place and restores it afterwards (:func:`_border_backward`), or, for a ``g`` it
    must not write to, takes the copy described next.

    The gradient of the zero-padded conv's output is ``g * r``. Conv backward is linear in it and
    ``r - 1`` is zero off the bands, so where the bands are cheap (see ``STRIP_WORK_LIMIT``) backward
    runs the conv backward on ``g`` itself and adds, per band, the conv backward of ``g_band * (r - 1)``
    on just the strip of ``x`` feeding that band: no O(area) copy of ``g``. Otherwise it copies ``g``
    once and scales the bands of the copy. ``g`` is never written to (other branches may share it).
    Symmetric zero padding only (``pads = (ph, pw)``); the caller zero-pads asymmetric ("same" with even
    kernels) inputs itself, as ``F.conv2d(padding="same")`` would, and passes ``pads = (0, 0)``.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, plan, stride, pads, dilation, groups, mode="bands"):
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        x, weight = _autocast_inputs(x, weight)
        ctx.save_for_backward(x, weight)
        ctx.plan, ctx.conv_args, ctx.mode = plan, (stride, pads, dilation, groups), mode
        y = _conv_reweighted(plan, x, weight, bias, stride, pads, dilation, groups, mode)
        ctx.use_strips = uses_strips(plan, weight, mode, ctx.needs_input_grad[:2])
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad = grad.to(x.dtype)  # no-op unless autograd handed a differently typed gradient
        if ctx.mode == "fullmap":
            return (*_full_map_backward(ctx, grad, x, weight), None, None, None, None, None, None)
        if ctx.mode == "border" and _writable(grad):
            return (*_border_backward(ctx, grad, x, weight), None, None, None, None, None, None)
        stride, pads, dilation, groups = ctx.conv_args
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        plan = ctx.plan
        scaled = bool(plan.regions) and not ctx.use_strips and (need_x or need_w)
        grad_conv = grad.clone() if scaled else grad
        with torch.autocast(grad.device.type, enabled=False):
            for rows, cols, ratio, _ in plan.regions if scaled else ():
                grad_conv[:, :, rows, cols].mul_(ratio)
            grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad_conv, x, weight, [weight.shape[0]] if need_b else None, stride, pads, dilation, False, (0, 0),
                groups, (need_x, need_w, need_b))
            grad_x = grad_x.to(ctx.dtypes[0]) if need_x else None
            grad_w = grad_w.to(ctx.dtypes[1]) if need_w else None
            grad_b = grad_b.to(ctx.dtypes[2]) if need_b else None
            for (rows, cols, _, coef), (ratio_off, valid_off) in zip(plan.regions, plan.grad_offsets):
                block = grad[:, :, rows, cols]
                if need_b:  # d y / d b = valid; the conv's own bias gradient counted r (scaled) or 1
                    assert grad_b is not None  # convolution_backward returned it: need_b was passed on
                    grad_b += (block * (coef if scaled else valid_off)).sum(dim=(0, 2, 3), dtype=grad_b.dtype)
                if (need_x or need_w) and not scaled:
                    _add_band_grads(block * ratio_off, x, weight, rows, cols, ctx.conv_args, grad_x, grad_w)
        return grad_x, grad_w, grad_b, None, None, None, None, None, None


def uses_strips(plan: BorderPlan, weight: torch.Tensor, mode: str, need_x_w) -> bool:
    """Whether backward corrects the bands with strip convolutions rather than a scaled copy of the gradient (see
    ``STRIP_WORK_LIMIT``); ``need_x_w``: whether the gradients of x and of the weight are wanted."""
    strip_work = plan.band_area * weight[0].numel() * sum(need_x_w)
    # the border mode falls back to the copy, which its kernel's band-only traffic beats where it runs
    return mode == "bands" and strip_work < STRIP_WORK_LIMIT * plan.out_size[0] * plan.out_size[1]


def _writable(grad: torch.Tensor) -> bool:
    """Whether backward may scale ``grad``'s band in place and restore it: dense (no element shared by two
    positions, as in a gradient expanded from ``sum()``) and not part of a graph being built (double backward)."""
    return border_kernel.dense(grad) and not grad.requires_grad and not torch.is_grad_enabled()


def _border_backward(ctx, grad, x, weight):
    """Gradients of the border mode: the band of ``grad`` is scaled by ``r`` in place for the conv backward, then
    restored bit for bit, so the caller's gradient is unchanged and no O(area) copy is made."""
    stride, pads, dilation, groups = ctx.conv_args
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    plan = ctx.plan
    saved, bias_delta = border_kernel.scale_band_(grad, plan.bands, plan.tables, bias_delta=need_b)
    try:
        with torch.autocast(grad.device.type, enabled=False):
            grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad, x, weight, [weight.shape[0]] if need_b else None, stride, pads, dilation, False, (0, 0),
                groups, (need_x, need_w, need_b))
    finally:
        border_kernel.restore_band_(grad, plan.bands, saved)
    return (grad_x.to(ctx.dtypes[0]) if need_x else None, grad_w.to(ctx.dtypes[1]) if need_w else None,
            (grad_b + bias_delta).to(ctx.dtypes[2]) if need_b else None)


def _full_map_backward(ctx, grad, x, weight):
    """Gradients of ``y = conv(x, W) * ratio + b * valid``: one scaled copy of ``grad`` feeds the conv backward."""
    stride, pads, dilation, groups = ctx.conv_args
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    ratio, valid = ctx.plan.full_maps()
    grad_x = grad_w = grad_b = None
    with torch.autocast(grad.device.type, enabled=False):
        if need_x or need_w:
            grad_conv = torch.mul(grad, ratio, out=torch.empty_like(grad))
            grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
                grad_conv, x, weight, None, stride, pads, dilation, False, (0, 0), groups, (need_x, need_w, False))
        if need_b:
            grad_b = (grad.sum(0, dtype=valid.dtype) * valid).sum((1, 2)).to(ctx.dtypes[2])
    # grad_x / grad_w were set above whenever need_x / need_w
    return (grad_x.to(ctx.dtypes[0]) if grad_x is not None and need_x else None,
            grad_w.to(ctx.dtypes[1]) if grad_w is not None and need_w else None, grad_b)


def _add_band_grads(grad_band, x, weight, rows, cols, conv_args, grad_x, grad_w):
    """Add to ``grad_x`` / ``grad_w`` (in place) the conv backward of ``grad_band`` (B, C_out, h, w),
    the gradient correction on output block ``[rows, cols]``."""
    stride, pads, dilation, groups = conv_args
    (kh, kw), (height, width) = weight.shape[-2:], x.shape[-2:]
    in_rows, top, bottom = _strip(rows.start, rows.stop, height, kh, stride[0], pads[0], dilation[0])
    in_cols, left, right = _strip(cols.start, cols.stop, width, kw, stride[1], pads[1], dilation[1])
    if in_rows.stop == in_rows.start or in_cols.stop == in_cols.start:
        return  # every window of the block lies in the padding: it reads no input, its weight gradient is 0
    strip = F.pad(x[:, :, in_rows, in_cols], (left, right, top, bottom))
    gx, gw, _ = torch.ops.aten.convolution_backward(
        grad_band.to(x.dtype), strip, weight, None, stride, (0, 0), dilation, False, (0, 0), groups,
        (grad_x is not None, grad_w is not None, False))
    if grad_x is not None:
        grad_x[:, :, in_rows, in_cols] += gx[:, :, top:gx.shape[-2] - bottom, left:gx.shape[-1] - right]
    if grad_w is not None:
        grad_w += gw


class PartialConv2d(nn.Conv2d):
    """``nn.Conv2d`` with partial-convolution based padding (same constructor, same parameters).

    ``forward(x)``: x (B, C_in, H, W) -> (B, C_out, Ho, Wo), the zero-padded conv re-weighted by
    ``K / S`` near the borders (bias not re-weighted; 0 where a window has no valid tap).

    ``forward(x, mask)``: mask-propagation ("big padding") mode. ``mask`` (B, 1, H, W) or (1, 1, H, W),
    1 = valid, 0 = hole; returns ``(y, mask_out)`` with ``mask_out`` (B or 1, 1, Ho, Wo).
    """

    def __init__(self, *args, **kwargs):
        if kwargs.get("padding_mode", "zeros") not in ("zeros", "partial"):
            raise PaddingError(f"PartialConv2d pads partially; got padding_mode={kwargs['padding_mode']!r}")
        kwargs["padding_mode"] = "zeros"
        super().__init__(*args, **kwargs)
        store_padding_mode(self, "partial")

    # -- plans ---------------------------------------------------------------------------------
    def _input_pads(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """Zero padding ``((top, bottom), (left, right))`` of an (H, W) input; fixed for a plain conv."""
        return conv_pads(self)

    def _geometry(self, height: int, width: int) -> tuple[Geometry, Geometry]:
        """(rows, cols) geometry of this conv on an (H, W) input: what its plan depends on."""
        (pt, pb), (pl, pr) = self._input_pads(height, width)
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        return (height, kh, sh, pt, pb, dh), (width, kw, sw, pl, pr, dw)

    def _plan(self, height: int, width: int, device: torch.device, dtype: torch.dtype) -> BorderPlan:
        """The plan for an (H, W) input of ``dtype``, shared with every conv of the same geometry (never stored
        on the module: not in the state_dict, not pickled, not deep-copied)."""
        return shared_plan(*self._geometry(height, width), device, _ratio_dtype(dtype))

    def _make_plan(self, height, width, device, dtype) -> BorderPlan:
        """A fresh, uncached plan (for tracing compilers); ``dtype`` is the ratio's."""
        rows, cols = self._geometry(height, width)
        return BorderPlan(axis_bands(*rows), axis_bands(*cols), device, dtype)

    # -- forward -------------------------------------------------------------------------------
    def _padded_input(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """``(input, symmetric conv padding)``: asymmetric padding ("same" with even kernels, TensorFlow's
        "same") is applied to the input here, as ``F.conv2d(padding="same")`` does; the ratio plan stays the
        one of the unpadded (H, W)."""
        (pt, pb), (pl, pr) = self._input_pads(*x.shape[-2:])
        if pt != pb or pl != pr:
            return F.pad(x, (pl, pr, pt, pb)), (0, 0)
        return x, (pt, pl)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None):
        if mask is not None:
            return self._masked_forward(x, mask)
        if torch.onnx.is_in_onnx_export():
            # an exported graph takes any (H, W): count the valid taps with a conv over a ones mask (shape-generic
            # ops) instead of baking in the plan of the one size the exporter traces with
            return self._masked_forward(x, torch.ones_like(x[:1, :1]))[0]
        if _compile_path == "custom_op" and torch.compiler.is_compiling() and not torch.jit.is_tracing():
            return self._custom_op_forward(x)
        if torch.compiler.is_compiling() or torch.jit.is_tracing():
            # compilers and the tracer need plain differentiable ops computed from the (symbolic) sizes: the
            # autograd.Function below is opaque to them, its in-place updates block fusion, and a plan built
            # from host ints would make dynamo guard on (and recompile for) every input size
            return traced_partial_conv(self, x, self._input_pads(*x.shape[-2:]), _ratio_dtype(x.dtype),
                                       pads_vary=isinstance(self, PartialConv2dSame))
        # eager sizes are ints (the tracer and compilers returned above)
        height, width = (int(n) for n in x.shape[-2:])
        x, pads = self._padded_input(x)
        plan = self._plan(height, width, x.device, x.dtype)
        numel = x.shape[0] * self.out_channels * plan.out_size[0] * plan.out_size[1]
        mode = choose_reweight(x.device, numel) if plan.regions else "bands"  # no band: nothing to re-weight
        if not (torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                                for t in (x, self.weight, self.bias))):
            return _conv_reweighted(plan, x, self.weight, self.bias, self.stride, pads, self.dilation, self.groups,
                                    mode)
        return _PartialConvFunction.apply(x, self.weight, self.bias, plan, self.stride, pads, self.dilation,
                                          self.groups, mode)

    def _custom_op_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The "custom_op" compile path: one ``seg::partial_conv2d`` call (registered by :mod:`seg.nn.custom_op`,
        which the package's ``__init__`` imports). Autocast does not reach into a custom op, so its casts are made
        here, as autocast would make them for the eager layer's conv (bias included)."""
        (pt, pb), (pl, pr) = self._input_pads(*x.shape[-2:])
        x, weight = _autocast_inputs(x, self.weight)
        bias = self.bias if self.bias is None or weight is self.weight else self.bias.to(weight.dtype)
        return torch.ops.seg.partial_conv2d(x, weight, bias, self.stride, [pt, pb, pl, pr], self.dilation,
                                            self.groups)

    def _masked_forward(self, x: torch.Tensor, mask: torch.Tensor):
        if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[-2:] != x.shape[-2:]:
            raise PaddingError(f"mask must be (B, 1, H, W) or (1, 1, H, W) matching x {tuple(x.shape)}; "
                             f"got {tuple(mask.shape)}")
        x, pads = self._padded_input(x * mask.to(x.dtype))
        mask, _ = self._padded_input(mask)
        raw = F.conv2d(x, self.weight, None, self.stride, pads, self.dilation, self.groups)
        rdtype = _ratio_dtype(raw.dtype)
        with torch.autocast(raw.device.type, enabled=False):
            ones = torch.ones((1, 1, *self.kernel_size), dtype=rdtype, device=raw.device)
            taps = F.conv2d(mask.to(rdtype), ones, None, self.stride, pads, self.dilation)
        valid = (taps > 0).to(rdtype)
        ratio = self.kernel_size[0] * self.kernel_size[1] / taps.clamp(min=1) * valid
        y = raw * ratio
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1) * valid
        return y.to(raw.dtype), valid.to(mask.dtype)


class PartialConv2dSame(PartialConv2d):
    """:class:`PartialConv2d` over TensorFlow's "same" window, which depends on the input size (timm's
    ``Conv2dSame``, used by its ``tf_*`` models): :func:`seg.nn.convert_padding` turns a ``Conv2dSame`` into
    this class, keeping ``padding`` 0 as there, and back. Per (H, W) it pads as ``Conv2dSame`` does
    (:func:`tf_same_pads`) and re-weights the windows that reach into that padding by ``K / S``.
    """

    def _input_pads(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        return tf_same_pads(height, kh, sh, dh), tf_same_pads(width, kw, sw, dw)
