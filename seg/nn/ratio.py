"""Geometry of partial-convolution based padding: where the re-weighting ratio differs from 1.

For an all-valid input the number of valid taps factorises, ``S(i, j) = S_h(i) * S_w(j)``, so the
ratio ``r = K / S`` is the outer product of two 1-D ratios and differs from 1 only in bands along the
borders. :func:`axis_bands` is integer arithmetic on shapes (where the bands are); :func:`axis_ratio` builds the
per-axis ratio tables on the tensor's device from the same integers, with no host data and no sync.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from seg.errors import SegError


class PaddingError(SegError, ValueError):
    """A padding layer asked for something it cannot do (empty output, unknown option, mismatched mask)."""


@dataclass(frozen=True)
class AxisBands:
    """Per-axis re-weighting for one conv along one spatial axis.

    Attributes:
        size_out: number of output positions along the axis.
        lead: leading output positions whose window is not wholly inside the input.
        trail: trailing such positions (``lead + trail <= size_out``).
        ratio: ``k / count`` for every output position (0 where no tap is valid), length ``size_out``.
        valid: 1.0 where at least one tap is valid, else 0.0, length ``size_out``.
        geometry: ``(size_in, kernel, stride, pad_lo, dilation)``, what :func:`axis_ratio` needs besides size_out.
    """

    size_out: int
    lead: int
    trail: int
    ratio: tuple[float, ...]
    valid: tuple[float, ...]
    geometry: tuple[int, int, int, int, int]


def output_size(size_in: int, kernel: int, stride: int, pad_lo: int, pad_hi: int, dilation: int) -> int:
    """Output length of a conv along one axis (same formula as ``torch.nn.Conv2d``)."""
    return (size_in + pad_lo + pad_hi - dilation * (kernel - 1) - 1) // stride + 1


def valid_taps(pos: int, size_in: int, kernel: int, stride: int, pad_lo: int, dilation: int) -> int:
    """Number of the ``kernel`` taps of output position ``pos`` that fall inside ``[0, size_in)``."""
    start = pos * stride - pad_lo
    return sum(1 for t in range(kernel) if 0 <= start + t * dilation < size_in)


def axis_bands(size_in: int, kernel: int, stride: int, pad_lo: int, pad_hi: int, dilation: int) -> AxisBands:
    """Bands of output positions along one axis whose window crosses the zero-padded border.

    Output positions whose whole window lies inside the input form one contiguous run (an
    intersection of two half-lines); everything before it is ``lead``, everything after is
    ``trail``. When no window fits inside the input, every position is ``lead``.
    """
    n_out = output_size(size_in, kernel, stride, pad_lo, pad_hi, dilation)
    if n_out <= 0:
        raise PaddingError(
            f"conv output would be empty: input size {size_in}, kernel {kernel}, stride {stride}, "
            f"padding ({pad_lo}, {pad_hi}), dilation {dilation}"
        )
    first_full = math.ceil(pad_lo / stride)
    last_full = (size_in - 1 + pad_lo - (kernel - 1) * dilation) // stride
    if first_full > last_full or first_full >= n_out:
        lead, trail = n_out, 0
    else:
        lead, trail = first_full, max(0, n_out - 1 - last_full)
    # interior windows are full, so only the bands need counting: O(perimeter), not O(area)
    counts = [kernel] * n_out
    for i in (*range(lead), *range(n_out - trail, n_out)):
        counts[i] = valid_taps(i, size_in, kernel, stride, pad_lo, dilation)
    ratio = tuple(kernel / c if c else 0.0 for c in counts)
    valid = tuple(1.0 if c else 0.0 for c in counts)
    return AxisBands(n_out, lead, trail, ratio, valid, (size_in, kernel, stride, pad_lo, dilation))


def axis_ratio(size_in: int, kernel: int, stride: int, pad_lo: int, dilation: int, size_out: int,
               device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ratio, valid)``, each (size_out,) of ``dtype`` on ``device``: ``kernel / S`` and ``[S > 0]`` per output
    position of one axis (ratio 0 where ``S = 0``), ``S`` the taps inside ``[0, size_in)``.

    Counted on the device from integers (``arange`` over positions and taps): no tensor is made from host
    data, so nothing waits for the host, and plain torch ops keep it traceable by compilers. The quotient is
    taken in float64 (correctly rounded) and then cast, so float32 tables hold ``float32(kernel / S)`` exactly
    as the host formula of :func:`axis_bands` does.
    """
    pos = torch.arange(size_out, device=device)
    taps = torch.arange(kernel, device=device) * dilation - pad_lo
    index = pos[:, None] * stride + taps[None, :]  # (size_out, kernel) input index of every tap
    count = ((index >= 0) & (index < size_in)).sum(1)
    valid = count > 0
    # full(K) / count rather than K / count: torch computes a scalar numerator as K * reciprocal(count),
    # which is not the correctly rounded quotient
    ratio = torch.full((size_out,), float(kernel), dtype=torch.float64, device=device) / count.clamp(min=1)
    return (ratio * valid).to(dtype), valid.to(dtype)
