"""Border-only Triton kernels for partial-convolution based padding: touch only the band where ``r != 1``.

``r = rh[i] * rw[j]`` (and ``valid = vh[i] * vw[j]``) is 1 except in the first ``top`` / last ``bottom`` output
rows and the first ``left`` / last ``right`` columns (:func:`seg.nn.ratio.axis_bands`). The kernels walk just
those band positions of a (B, C, Ho, Wo) tensor, addressed through its strides (NCHW and channels_last alike),
and read the ratio from the per-axis tables of :func:`seg.nn.ratio.axis_ratio`; the arithmetic runs in the
tables' dtype (float32, float64 for float64 tensors) and is stored in the tensor's dtype.

* :func:`reweight_band_` (forward): ``y = y_b * r + b * (valid - r)`` in place on the biased conv output
  ``y_b``, which equals ``conv(x) * r + b * valid``.
* :func:`scale_band_` / :func:`restore_band_` (backward): scale the band of the incoming gradient by ``r`` in
  place, saving the original band in a compact buffer, and write it back bit for bit once the conv backward
  has read the scaled gradient.

Used for CUDA tensors when Triton imports. Tests run them on CPU tensors through Triton's interpreter: with
``TRITON_INTERPRET=1`` set before this module is imported, ``SEG_BORDER_KERNEL_ON_CPU=1`` also lets
:func:`runs_on` accept CPU tensors (a test-only switch; it does nothing without the interpreter).
"""
from __future__ import annotations

import functools
import os

import torch

#: Band elements per Triton program.
BLOCK = 1024

#: Oldest CUDA compute capability Triton generates code for (Volta).
MIN_CAPABILITY = (7, 0)

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
#: CPU tensors take the kernels too (Triton's interpreter; tests only).
ON_CPU = _INTERPRET and os.environ.get("SEG_BORDER_KERNEL_ON_CPU") == "1"

HAVE_TRITON = False
# importing triton costs ~0.5 s: only where a kernel can run (a CUDA machine, or the interpreter)
if torch.cuda.is_available() or _INTERPRET:
    try:
        import triton
        import triton.language as tl
    except ImportError:
        pass
    else:
        HAVE_TRITON = True

Bands = tuple[int, int, int, int]  # (top, bottom, left, right) rows / columns of the band
Tables = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # rh (Ho,), rw (Wo,), vh (Ho,), vw (Wo,)

if HAVE_TRITON:
    # sizes and strides change with every input size: not specialised, so a new size reuses the compiled kernel
    _SHAPE_ARGS = ["total", "channels", "ho", "wo", "top", "bottom", "left", "right", "sn", "sc", "sh", "sw"]

    @triton.jit
    def _band_positions(e, channels, ho, wo, top, bottom, left, right, sn, sc, sh, sw,
                        CHANNELS_INNER: tl.constexpr):
        """Flat band index ``e`` (ordered (n, c, p), or (n, p, c) when channels are innermost in memory, so
        neighbouring indices are neighbours in memory) -> (element offset, row i, column j, channel c)."""
        side = left + right
        n_pos = (top + bottom) * wo + (ho - top - bottom) * side
        if CHANNELS_INNER:
            c = e % channels
            p = (e // channels) % n_pos
            n = e // channels // n_pos
        else:
            p = e % n_pos
            c = (e // n_pos) % channels
            n = e // n_pos // channels
        rows_part = (top + bottom) * wo
        in_rows = p < rows_part
        # whole rows at the top and the bottom
        q = tl.where(in_rows, p, 0)
        row = q // wo
        row_i = tl.where(row < top, row, row - top + ho - bottom)
        row_j = q % wo
        # the left and right column blocks of the rows in between
        q2 = tl.where(in_rows, 0, p - rows_part)
        col = q2 % tl.maximum(side, 1)
        side_i = top + q2 // tl.maximum(side, 1)
        side_j = tl.where(col < left, col, col - left + wo - right)
        i = tl.where(in_rows, row_i, side_i)
        j = tl.where(in_rows, row_j, side_j)
        return n * sn + c * sc + i * sh + j * sw, i, j, c

    @triton.jit(do_not_specialize=_SHAPE_ARGS)
    def _reweight_kernel(y, rh, rw, vh, vw, bias, total, channels, ho, wo, top, bottom, left, right,
                         sn, sc, sh, sw, HAS_BIAS: tl.constexpr, CHANNELS_INNER: tl.constexpr,
                         BLOCK: tl.constexpr):
        e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        inside = e < total
        off, i, j, c = _band_positions(e, channels, ho, wo, top, bottom, left, right, sn, sc, sh, sw,
                                       CHANNELS_INNER)
        r = tl.load(rh + i, mask=inside) * tl.load(rw + j, mask=inside)
        out = tl.load(y + off, mask=inside).to(r.dtype) * r
        if HAS_BIAS:
            valid = tl.load(vh + i, mask=inside) * tl.load(vw + j, mask=inside)
            out += tl.load(bias + c, mask=inside).to(r.dtype) * (valid - r)
        tl.store(y + off, out.to(y.dtype.element_ty), mask=inside)

    @triton.jit(do_not_specialize=_SHAPE_ARGS)
    def _scale_kernel(g, saved, delta, rh, rw, vh, vw, total, channels, ho, wo, top, bottom, left, right,
                      sn, sc, sh, sw, WITH_DELTA: tl.constexpr, CHANNELS_INNER: tl.constexpr, BLOCK: tl.constexpr):
        e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        inside = e < total
        off, i, j, c = _band_positions(e, channels, ho, wo, top, bottom, left, right, sn, sc, sh, sw,
                                       CHANNELS_INNER)
        r = tl.load(rh + i, mask=inside) * tl.load(rw + j, mask=inside)
        value = tl.load(g + off, mask=inside)
        tl.store(saved + e, value, mask=inside)
        scaled = (value.to(r.dtype) * r).to(g.dtype.element_ty)
        tl.store(g + off, scaled, mask=inside)
        if WITH_DELTA:
            # what the bias gradient lacks: it should sum g * valid, the conv backward sums the stored g * r
            valid = tl.load(vh + i, mask=inside) * tl.load(vw + j, mask=inside)
            tl.store(delta + e, value.to(r.dtype) * valid - scaled.to(r.dtype), mask=inside)

    @triton.jit(do_not_specialize=_SHAPE_ARGS)
    def _restore_kernel(g, saved, total, channels, ho, wo, top, bottom, left, right, sn, sc, sh, sw,
                        CHANNELS_INNER: tl.constexpr, BLOCK: tl.constexpr):
        e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        inside = e < total
        off, _, _, _ = _band_positions(e, channels, ho, wo, top, bottom, left, right, sn, sc, sh, sw,
                                       CHANNELS_INNER)
        tl.store(g + off, tl.load(saved + e, mask=inside), mask=inside)


def runs_on(device: torch.device) -> bool:
    """Whether the kernels run on tensors of ``device``: a CUDA GPU Triton supports, or the CPU under the test
    switch."""
    if not HAVE_TRITON:
        return False
    if device.type == "cuda":
        return _triton_supports(device.index if device.index is not None else torch.cuda.current_device())
    return device.type == "cpu" and ON_CPU


@functools.cache
def _triton_supports(index: int) -> bool:
    # looked up once per GPU: forward calls this for every conv
    return torch.cuda.get_device_capability(index) >= MIN_CAPABILITY


def dense(t: torch.Tensor) -> bool:
    """Whether ``t`` (B, C, H, W) owns every element it addresses exactly once (NCHW or channels_last)."""
    return t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last)


def _band_positions_per_plane(shape: torch.Size, bands: Bands) -> int:
    """Band positions of one (Ho, Wo) plane of a (B, C, Ho, Wo) tensor."""
    top, bottom, left, right = bands
    ho, wo = shape[-2:]
    return (top + bottom) * wo + (ho - top - bottom) * (left + right)


def _launch_args(t: torch.Tensor, bands: Bands) -> tuple[tuple[int, ...], bool]:
    """The kernels' shape arguments ``(total, channels, ho, wo, top, bottom, left, right, sn, sc, sh, sw)`` for
    ``t`` (B, C, Ho, Wo), and whether its channels are innermost in memory."""
    total = t.shape[0] * t.shape[1] * _band_positions_per_plane(t.shape, bands)
    channels_inner = t.stride(1) == 1 and t.shape[1] > 1
    return (total, t.shape[1], *t.shape[-2:], *bands, *t.stride()), channels_inner


def _grid(total: int) -> tuple[int]:
    return (triton.cdiv(total, BLOCK),)  # an empty batch launches no program


def reweight_band_(y: torch.Tensor, bands: Bands, tables: Tables, bias: torch.Tensor | None) -> torch.Tensor:
    """``y = y * r + bias * (valid - r)`` in place on the band of ``y`` (B, C, Ho, Wo), the conv output
    INCLUDING bias (dense, NCHW or channels_last); returns ``y``."""
    args, channels_inner = _launch_args(y, bands)
    _reweight_kernel[_grid(args[0])](y, *tables, y if bias is None else bias, *args, HAS_BIAS=bias is not None,
                                     CHANNELS_INNER=channels_inner, BLOCK=BLOCK)
    return y


def scale_band_(g: torch.Tensor, bands: Bands, tables: Tables,
                bias_delta: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale the band of ``g`` (B, C, Ho, Wo, dense) by ``r`` in place; returns ``(saved, delta)``: the band's
    original values for :func:`restore_band_` and, with ``bias_delta``, the (C,) amount to add to the conv
    backward's bias gradient (taken from the scaled ``g``) to make it ``sum(g * valid)``."""
    args, channels_inner = _launch_args(g, bands)
    total = args[0]
    saved = torch.empty(total, dtype=g.dtype, device=g.device)
    # without bias_delta the kernel never touches delta: any pointer of the same type will do
    delta = torch.empty(total, dtype=tables[0].dtype, device=g.device) if bias_delta else tables[0]
    _scale_kernel[_grid(total)](g, saved, delta, *tables, *args, WITH_DELTA=bias_delta,
                                CHANNELS_INNER=channels_inner, BLOCK=BLOCK)
    if not bias_delta:
        return saved, None
    batch, channels, positions = g.shape[0], g.shape[1], _band_positions_per_plane(g.shape, bands)
    if channels_inner:
        return saved, delta.view(batch, positions, channels).sum((0, 1))
    return saved, delta.view(batch, channels, positions).sum((0, 2))


def restore_band_(g: torch.Tensor, bands: Bands, saved: torch.Tensor) -> None:
    """Write ``saved`` (from :func:`scale_band_` on the same ``g``) back into the band of ``g``, bit for bit."""
    args, channels_inner = _launch_args(g, bands)
    _restore_kernel[_grid(args[0])](g, saved, *args, CHANNELS_INNER=channels_inner, BLOCK=BLOCK)
