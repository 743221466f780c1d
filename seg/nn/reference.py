"""A slow but obviously correct float64 partial convolution, the yardstick for :class:`seg.nn.PartialConv2d`.

Written straight from the definition (arXiv 1811.11718, eq. 1; docs/partial_padding.md): unfold the
zero-padded input into windows, count each window's valid taps ``S`` from a zero-padded mask, and return
``W^T (X * M) * K / S + b`` where ``S > 0``, else 0. Everything runs in float64 on the CPU with no
shortcut (no bands, no cached plan, no factorised ratio), so the layer's tests, and the device check
(``bench/gpu_check.py``), compare against it rather than against the layer's own output. ``grid_cases``
is the grid of conv geometries both check the layer on.
"""
from __future__ import annotations

import itertools
import random

import torch
import torch.nn.functional as F

from seg.errors import InputError

#: ``padding`` as ``nn.Conv2d`` takes it ("same", "valid", an int or a pair) or an explicit (top, bottom, left, right)
Padding = str | int | tuple[int, ...]


def pads_of(padding: Padding, kernel: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` zero padding, resolved independently of :mod:`seg.nn.partial_conv`.

    "same" puts the odd pixel at the end, as ``torch.nn.functional.conv2d`` does."""
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        out: list[int] = []
        for k, d in zip(kernel, dilation):
            total = d * (k - 1)
            out += [total // 2, total - total // 2]
        return out[0], out[1], out[2], out[3]
    if isinstance(padding, str):
        raise InputError(f"unknown padding {padding!r}")
    if isinstance(padding, int):
        return padding, padding, padding, padding
    if len(padding) == 4:
        return padding[0], padding[1], padding[2], padding[3]
    return padding[0], padding[0], padding[1], padding[1]


def naive_partial_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int],
                       padding: Padding, dilation: tuple[int, int], groups: int,
                       mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, valid)`` of a partial conv, in float64: ``y = W^T (X*M) * K / S + b`` where ``S > 0``, else 0.

    Shapes: x (B, C_in, H, W), weight (C_out, C_in / groups, kh, kw), bias (C_out,) or None, mask
    (B | 1, 1, H, W) of valid pixels (None: all valid) -> y (B, C_out, Ho, Wo), valid (B, 1, Ho, Wo) with
    ``valid = [S > 0]``. Differentiable (autograd through unfold), so it also gives reference gradients.
    """
    x, weight = x.double(), weight.double()
    b, c_in, h, w = x.shape
    kh, kw = weight.shape[-2:]
    pt, pb, pl, pr = pads_of(padding, (kh, kw), dilation)
    m = torch.ones(1, 1, h, w, dtype=torch.float64) if mask is None else mask.double()
    m = m.expand(b, 1, h, w)
    xp = F.pad(x * m, (pl, pr, pt, pb))
    mp = F.pad(m, (pl, pr, pt, pb))
    cols = F.unfold(xp, (kh, kw), dilation=dilation, stride=stride)  # (B, C*K, L)
    mcols = F.unfold(mp, (kh, kw), dilation=dilation, stride=stride)  # (B, K, L)
    ho = (h + pt + pb - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + pl + pr - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    taps = mcols.sum(1, keepdim=True)  # (B, 1, L)
    cin_g, cout_g = c_in // groups, weight.shape[0] // groups
    outs = []
    for g in range(groups):
        cg = cols[:, g * cin_g * kh * kw:(g + 1) * cin_g * kh * kw]
        wg = weight[g * cout_g:(g + 1) * cout_g].reshape(cout_g, -1)
        outs.append(torch.einsum("ok,bkl->bol", wg, cg))
    out = torch.cat(outs, 1)
    valid = (taps > 0).double()
    out = out * (kh * kw) / taps.clamp(min=1) * valid
    if bias is not None:
        out = out + bias.double().view(1, -1, 1) * valid
    return out.view(b, -1, ho, wo), valid.view(b, 1, ho, wo)


def naive_grads(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gy: torch.Tensor,
                stride: tuple[int, int], padding: Padding, dilation: tuple[int, int],
                groups: int) -> tuple[torch.Tensor, ...]:
    """Float64 gradients of ``sum(naive_partial_conv(x, ...)[0] * gy)`` with respect to x, weight and bias
    (bias only when given); ``gy`` has the output's shape (B, C_out, Ho, Wo)."""
    leaves = [t.detach().double().requires_grad_() for t in (x, weight) + ((bias,) if bias is not None else ())]
    out = naive_partial_conv(leaves[0], leaves[1], leaves[2] if bias is not None else None,
                             stride, padding, dilation, groups)[0]
    return torch.autograd.grad(out, leaves, gy.double())


def grid_cases(n: int = 160, seed: int = 0) -> list[tuple]:
    """Up to ``n`` conv geometries (kernel, stride, dilation, padding, (H, W), (c_in, c_out, groups), bias) drawn
    without repetition from every combination, in a fixed shuffled order (``seed``); geometries with an empty output
    or "same" at a stride are left out."""
    kernels = [(1, 1), (3, 3), (5, 5), (7, 7), (3, 5), (2, 2), (4, 3)]
    strides = [(1, 1), (2, 2), (3, 3), (1, 2)]
    dilations = [(1, 1), (2, 2), (4, 4), (1, 2)]
    paddings = ["radius", "zero", "asym", "big", "same"]
    sizes = [(9, 11), (8, 8), (13, 6), (3, 4), (16, 15)]
    groups = [(4, 6, 1), (4, 6, 2), (4, 4, 4)]  # (c_in, c_out, groups): dense, grouped, depthwise
    everything = list(itertools.product(kernels, strides, dilations, paddings, sizes, groups, [True, False]))
    random.Random(seed).shuffle(everything)
    cases = []
    for k, s, d, p, size, g, bias in everything:
        if p == "same" and s != (1, 1):
            continue  # torch allows "same" only at stride 1
        choices: dict[str, Padding] = {
            "radius": (d[0] * (k[0] - 1) // 2, d[1] * (k[1] - 1) // 2), "zero": 0, "asym": (1, 3),
            "big": (d[0] * (k[0] - 1) // 2 + 2, d[1] * (k[1] - 1) // 2 + 3), "same": "same"}
        padding = choices[p]
        pt, pb, pl, pr = pads_of(padding, k, d)
        if size[0] + pt + pb < d[0] * (k[0] - 1) + 1 or size[1] + pl + pr < d[1] * (k[1] - 1) + 1:
            continue  # empty output: nn.Conv2d rejects it too
        cases.append((k, s, d, padding, size, g, bias))
        if len(cases) == n:
            break
    return cases
