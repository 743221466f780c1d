"""Geometry of partial-convolution based padding: where the re-weighting ratio differs from 1.

For an all-valid input the number of valid taps factorises, ``S(i, j) = S_h(i) * S_w(j)``, so the
ratio ``r = K / S`` is the outer product of two 1-D ratios and differs from 1 only in bands along the
borders. Everything here is pure integer arithmetic on shapes; tensors are built from it in
:mod:`seg.nn.partial_conv`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

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
    """

    size_out: int
    lead: int
    trail: int
    ratio: tuple[float, ...]
    valid: tuple[float, ...]


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
    return AxisBands(n_out, lead, trail, ratio, valid)
