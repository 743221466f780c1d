"""Float64 reference of partial-convolution based padding, independent of :mod:`seg.nn.partial_conv`.

``naive_partial_conv`` evaluates the paper's formula directly (unfold + average over the valid taps of a
zero-padded mask); ``grid_cases`` is the grid of conv geometries the layer is checked on (tests, and
``bench/gpu_check.py`` on the device).
"""
from __future__ import annotations

import itertools
import random

import torch
import torch.nn.functional as F


def pads_of(padding, kernel, dilation):
    """(top, bottom, left, right) zero padding, resolved independently of the code under test."""
    if padding == "same":
        out = []
        for k, d in zip(kernel, dilation):
            total = d * (k - 1)
            out += [total // 2, total - total // 2]
        return tuple(out)
    if not isinstance(padding, int) and len(padding) == 4:  # explicit (top, bottom, left, right)
        return tuple(padding)
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    return ph, ph, pw, pw


def naive_partial_conv(x, weight, bias, stride, padding, dilation, groups, mask=None):
    """y = W^T (X*M) * K / S + b where S > 0, else 0; S counts valid taps (zero-padded mask)."""
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


def grid_cases(n=160, seed=0):
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
        padding = {"radius": (d[0] * (k[0] - 1) // 2, d[1] * (k[1] - 1) // 2), "zero": 0, "asym": (1, 3),
                   "big": (d[0] * (k[0] - 1) // 2 + 2, d[1] * (k[1] - 1) // 2 + 3), "same": "same"}[p]
        pt, pb, pl, pr = pads_of(padding, k, d)
        if size[0] + pt + pb < d[0] * (k[0] - 1) + 1 or size[1] + pl + pr < d[1] * (k[1] - 1) + 1:
            continue  # empty output: nn.Conv2d rejects it too
        cases.append((k, s, d, padding, size, g, bias))
        if len(cases) == n:
            break
    return cases
