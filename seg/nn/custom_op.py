"""The eager partial conv as one registered operator, ``seg::partial_conv2d``, for ``torch.compile``.

The alternative to :mod:`seg.nn.traced`'s plain ops (:func:`seg.nn.set_compile_path` chooses): dynamo and
AOTAutograd see a single opaque node whose shape comes from a fake implementation (symbolic sizes stay
symbolic), and at run time it is the eager layer itself: the cached :class:`~seg.nn.partial_conv.BorderPlan`,
the strategy :func:`~seg.nn.partial_conv.choose_reweight` picks (the Triton border kernel on a GPU that
runs it, the bands on a CPU) and, through ``seg::partial_conv2d_backward``, the band-scaled backward of
:class:`~seg.nn.partial_conv._PartialConvFunction`. Inductor cannot fuse into it; whether that loses to the
plain ops' fusion is what the device check's compile section measures.

Arguments of both ops: ``pads`` = ``[top, bottom, left, right]`` zero padding of the (H, W) input,
``stride`` / ``dilation`` pairs, ``groups``; asymmetric pads are applied to the input, as the eager layer does.
"""
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import Tensor

from .partial_conv import (
    BorderPlan,
    _conv_reweighted,
    _PartialConvFunction,
    _ratio_dtype,
    choose_reweight,
    shared_plan,
    uses_strips,
)


def _prepare(x: Tensor, weight: Tensor, stride, pads, dilation) -> tuple[Tensor, tuple[int, int], BorderPlan, str]:
    """``(input, symmetric conv padding, plan, re-weighting mode)`` of the eager layer for ``x`` (B, C_in, H, W)."""
    height, width = x.shape[-2:]
    pt, pb, pl, pr = pads
    kh, kw = weight.shape[-2:]
    plan = shared_plan((height, kh, stride[0], pt, pb, dilation[0]), (width, kw, stride[1], pl, pr, dilation[1]),
                       x.device, _ratio_dtype(x.dtype))
    numel = x.shape[0] * weight.shape[0] * plan.out_size[0] * plan.out_size[1]
    mode = choose_reweight(x.device, numel) if plan.regions else "bands"
    if pt != pb or pl != pr:
        return F.pad(x, (pl, pr, pt, pb)), (0, 0), plan, mode
    return x, (pt, pl), plan, mode


@torch.library.custom_op("seg::partial_conv2d", mutates_args=())
def partial_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, stride: list[int], pads: list[int],
                   dilation: list[int], groups: int) -> Tensor:
    """Partial conv of ``x`` (B, C_in, H, W) -> (B, C_out, Ho, Wo), computed as the eager PartialConv2d does."""
    x, conv_pads, plan, mode = _prepare(x, weight, stride, pads, dilation)
    return _conv_reweighted(plan, x, weight, bias, tuple(stride), conv_pads, tuple(dilation), groups, mode)


@partial_conv2d.register_fake
def _partial_conv2d_fake(x, weight, bias, stride, pads, dilation, groups):
    # the zero-padded conv has the partial conv's shape, dtype and layout
    pt, pb, pl, pr = pads
    return F.conv2d(F.pad(x, (pl, pr, pt, pb)), weight, bias, stride, 0, dilation, groups)


@torch.library.custom_op("seg::partial_conv2d_backward", mutates_args=())
def partial_conv2d_backward(grad: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None, stride: list[int],
                            pads: list[int], dilation: list[int], groups: int,
                            output_mask: list[bool]) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients ``(x, weight, bias)`` of :func:`partial_conv2d` for the output gradient ``grad`` (B, C_out, Ho, Wo),
    by the eager layer's backward; those ``output_mask`` leaves out (and the bias's, without bias) are empty."""
    height, width = x.shape[-2:]
    padded, conv_pads, plan, mode = _prepare(x, weight, stride, pads, dilation)
    needs = (output_mask[0], output_mask[1], output_mask[2] and bias is not None)
    ctx = SimpleNamespace(saved_tensors=(padded, weight), needs_input_grad=needs, plan=plan, mode=mode,
                          conv_args=(tuple(stride), conv_pads, tuple(dilation), groups),
                          dtypes=(x.dtype, weight.dtype, None if bias is None else bias.dtype),
                          use_strips=uses_strips(plan, weight, mode, needs[:2]))
    grads = _PartialConvFunction.backward(ctx, grad)[:3]
    grad_x = grads[0]
    if grad_x is not None and padded is not x:  # the gradient of the input, not of its zero-padded copy
        grad_x = grad_x[:, :, pads[0]:pads[0] + height, pads[2]:pads[2] + width].contiguous()
    return tuple(g if g is not None else x.new_empty(0) for g in (grad_x, *grads[1:]))  # type: ignore[return-value]


@partial_conv2d_backward.register_fake
def _partial_conv2d_backward_fake(grad, x, weight, bias, stride, pads, dilation, groups, output_mask):
    need_x, need_w, need_b = output_mask[0], output_mask[1], output_mask[2] and bias is not None
    return (torch.empty_like(x) if need_x else x.new_empty(0), torch.empty_like(weight) if need_w else x.new_empty(0),
            torch.empty_like(bias) if need_b else x.new_empty(0))


def _setup_context(ctx, inputs, output) -> None:
    x, weight, bias, stride, pads, dilation, groups = inputs
    ctx.save_for_backward(x, weight, bias)
    ctx.conv_args = (stride, pads, dilation, groups)


def _backward(ctx, grad):
    x, weight, bias = ctx.saved_tensors
    needs = ctx.needs_input_grad[:3]
    grads = torch.ops.seg.partial_conv2d_backward(grad, x, weight, bias, *ctx.conv_args, list(needs))
    return (*(g if need else None for g, need in zip(grads, needs)), None, None, None, None)


partial_conv2d.register_autograd(_backward, setup_context=_setup_context)
