"""Partial padding as plain differentiable torch ops, for ``torch.compile`` and ``torch.jit.trace``.

The eager layer builds a :class:`~seg.nn.partial_conv.BorderPlan` from host integers and applies it with an
``autograd.Function`` and in-place updates: opaque to the tracer, a blocker for fusion, and (built from
Python ints) a guard on the exact input size that makes dynamo recompile for every new size. Here the
ratio ``r = K / S`` is computed from the shapes alone with ``torch.arange`` over output positions and taps,
so dynamo keeps the sizes symbolic, inductor fuses ``y * r + b * valid`` into the neighbouring ops, and
autograd differentiates it like any other expression. The ratio equals the eager plan's bit for bit: the
per-axis counts come from the same :func:`seg.nn.ratio.axis_ratio` the eager plans use.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .ratio import axis_ratio


def _axis_ratio(size_in: int, kernel: int, stride: int, pad_lo: int, pad_hi: int, dilation: int,
                device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`seg.nn.ratio.axis_ratio` with the output length worked out from the (possibly symbolic) sizes."""
    n_out = (size_in + pad_lo + pad_hi - dilation * (kernel - 1) - 1) // stride + 1
    return axis_ratio(size_in, kernel, stride, pad_lo, dilation, n_out, device, dtype)


def traced_partial_conv(conv: nn.Conv2d, x: torch.Tensor, pads: tuple[tuple[int, int], tuple[int, int]],
                        ratio_dtype: torch.dtype, pads_vary: bool = False) -> torch.Tensor:
    """Partial-padding conv of ``x`` (B, C_in, H, W) -> (B, C_out, Ho, Wo) in plain ops.

    ``pads`` = ``((top, bottom), (left, right))``, the zero padding ``conv`` applies to an (H, W) input;
    ``pads_vary``: they depend on (H, W) (TensorFlow's "same"). The arithmetic of the re-weighting runs in
    ``ratio_dtype`` and the result has the conv output's dtype."""
    (pt, pb), (pl, pr) = pads
    height, width = x.shape[-2:]
    # asymmetric padding is applied to the input, as F.conv2d(padding="same") does; so are pads that vary with
    # the (symbolic) input size: testing those for symmetry would make dynamo guard on the size's parity
    if not pads_vary and pt == pb and pl == pr:
        conv_pads = (pt, pl)
    else:
        x, conv_pads = F.pad(x, (pl, pr, pt, pb)), (0, 0)
    y = F.conv2d(x, conv.weight, None, conv.stride, conv_pads, conv.dilation, conv.groups)
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    rh, vh = _axis_ratio(height, kh, sh, pt, pb, dh, y.device, ratio_dtype)
    rw, vw = _axis_ratio(width, kw, sw, pl, pr, dw, y.device, ratio_dtype)
    out = y * (rh[:, None] * rw[None, :])
    if conv.bias is not None:
        out = out + conv.bias.view(-1, 1, 1) * (vh[:, None] * vw[None, :])
    return out.to(y.dtype)
