"""The one place that decides padding: a conv factory for seg's models and a converter for any model."""
from __future__ import annotations

import sys

from torch import nn

from seg.errors import SegError

from .partial_conv import PartialConv2d, PartialConv2dSame, conv_pads, store_padding_mode
from .ratio import PaddingError

PADDING_MODES = ("zeros", "reflect", "replicate", "partial")
PAPER_PAIR = ("zeros", "partial")  # the two modes the paper compares, its baseline first


class PaddingModeError(PaddingError):
    """A padding mode that is not one of PADDING_MODES."""


class PaddingConversionError(SegError, TypeError):
    """A conv whose padding cannot be switched to the mode asked (the message names the conv)."""


def _check_mode(mode: str) -> None:
    if mode not in PADDING_MODES:
        raise PaddingModeError(f"unknown padding mode {mode!r}; expected one of {PADDING_MODES}")


def tf_same_conv_types() -> tuple[type, ...]:
    """timm's convs that pad to TensorFlow's "same" window inside forward (``padding`` stays 0), and ours.

    Looked up in ``sys.modules``: a model holding timm's classes has imported timm already, and a model
    without them must not make seg import timm.
    """
    module = sys.modules.get("timm.layers.conv2d_same")
    timm_types = () if module is None else (module.Conv2dSame, module.Conv2dSameExport)
    return (PartialConv2dSame, *timm_types)


def create_conv2d(in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], stride=1,
                  padding=None, dilation=1, groups: int = 1, bias: bool = True,
                  padding_mode: str = "zeros") -> nn.Conv2d:
    """Build a conv whose border handling follows ``padding_mode``.

    ``padding=None`` means "same"-style padding ``dilation * (k - 1) // 2`` per axis (for odd ``k``
    the output keeps the input size at stride 1). Returns ``PartialConv2d`` for "partial", else a
    plain ``nn.Conv2d`` with ``padding_mode`` set; both have identical parameters and state_dict keys.
    Shapes: (B, in_channels, H, W) -> (B, out_channels, Ho, Wo).
    """
    _check_mode(padding_mode)
    if padding is None:
        ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        ds = (dilation, dilation) if isinstance(dilation, int) else dilation
        padding = tuple(d * (k - 1) // 2 for k, d in zip(ks, ds))
    conv_cls: type[nn.Conv2d] = PartialConv2d if padding_mode == "partial" else nn.Conv2d
    conv = conv_cls(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                    dilation=dilation, groups=groups, bias=bias)
    if padding_mode != "partial":
        store_padding_mode(conv, padding_mode)
    return conv


def has_padding(conv: nn.Conv2d) -> bool:
    """True when ``conv`` pads its input at all (so its padding mode matters)."""
    return any(p for pair in conv_pads(conv) for p in pair)


def set_padding_mode(conv: nn.Conv2d, mode: str) -> nn.Conv2d:
    """Switch one conv to ``mode`` in place, keeping its parameters, buffers and hooks.

    Only the class (``nn.Conv2d`` <-> ``PartialConv2d``, timm's ``Conv2dSame`` <-> ``PartialConv2dSame``)
    and ``padding_mode`` change, which is why state_dict keys and values are untouched and a round trip
    restores the exact original. Raises PaddingConversionError for a conv with its own forward (it may pad
    in ways seg cannot see) and for TensorFlow-"same" convs asked for reflect/replicate.
    """
    _check_mode(mode)
    return _set_mode(conv, mode, _conv_kind(conv, tf_same_conv_types()))


def _conv_kind(conv: nn.Conv2d, tf_same_types: tuple[type, ...]) -> str:
    """"tf_same" (pads per input inside forward, see :func:`tf_same_conv_types`), "plain" (``nn.Conv2d`` or
    ``PartialConv2d``) or "own_forward" (any other subclass: it may pad in ways seg cannot see)."""
    if isinstance(conv, tf_same_types):
        return "tf_same"
    return "plain" if type(conv) in (nn.Conv2d, PartialConv2d) else "own_forward"


def _set_mode(conv: nn.Conv2d, mode: str, kind: str) -> nn.Conv2d:
    """:func:`set_padding_mode` for a checked ``mode`` and the conv's :func:`_conv_kind`."""
    if kind == "tf_same":
        return _set_tf_same_mode(conv, mode)
    if kind == "own_forward":
        raise PaddingConversionError(
            f"cannot switch padding of {type(conv).__name__} (a subclass of nn.Conv2d with its own forward); "
            "only plain nn.Conv2d, PartialConv2d and timm's Conv2dSame are converted")
    # nn.Conv2d pads reflect/replicate from this cached tuple, made in __init__; rebuild it so a conv
    # whose `padding` was edited after construction pads by what it says
    (top, bottom), (left, right) = conv_pads(conv)
    conv._reversed_padding_repeated_twice = [left, right, top, bottom]
    if mode == "partial":
        conv.__class__ = PartialConv2d
    else:
        conv.__class__ = nn.Conv2d
    store_padding_mode(conv, mode)
    return conv


def _set_tf_same_mode(conv: nn.Conv2d, mode: str) -> nn.Conv2d:
    """timm's ``Conv2dSame`` (zero padding) <-> :class:`PartialConv2dSame` over the same padded window."""
    if mode in ("reflect", "replicate"):
        raise PaddingConversionError(
            f"cannot switch {type(conv).__name__} (TensorFlow 'same' padding, sized per input) to {mode}; "
            "it converts to zeros or partial only")
    if mode == "partial" and type(conv) is not PartialConv2dSame:
        # a plain attribute: not in the state_dict. torch types Module.__setattr__'s value as Tensor | Module,
        # though any other value is stored as a plain attribute
        conv._zero_padding_class = type(conv)  # type: ignore[assignment]
        conv.__class__ = PartialConv2dSame
    elif mode == "zeros" and type(conv) is PartialConv2dSame:
        zero_class = conv.__dict__.pop("_zero_padding_class", None) or next(iter(tf_same_conv_types()[1:]), None)
        if zero_class is None:  # built as PartialConv2dSame and timm not imported: no zero-padding twin to become
            raise PaddingConversionError(
                "cannot switch a PartialConv2dSame built directly to zeros: its zero-padding twin is timm's "
                "Conv2dSame (import timm first, or build the model with timm and convert it to partial)")
        conv.__class__ = zero_class
    store_padding_mode(conv, mode)
    return conv


def _pads_somewhere(conv: nn.Module) -> bool:
    """Whether ``conv`` pads its input: by its ``padding``, or inside forward to TensorFlow's "same" window."""
    return isinstance(conv, nn.Conv2d) and (has_padding(conv) or isinstance(conv, tf_same_conv_types()))


def convert_padding(module: nn.Module, mode: str) -> nn.Module:
    """Switch every padding ``nn.Conv2d`` inside ``module`` (any model, torchvision's and timm's too) to ``mode``.

    In place; returns ``module``. Convs without padding are left alone; parameters and state_dict
    keys are identical before and after; converting twice changes nothing. timm's ``Conv2dSame`` (padding 0,
    padded per input inside forward) becomes :class:`PartialConv2dSame` for "partial". Any other conv
    subclass with its own forward is refused (PaddingConversionError) when it has padding, or, for modes
    other than "zeros", a spatial kernel: it may pad inside forward (timm's ``StdConv2dSame`` does), and
    skipping it would silently leave zero padding. Pools are not convolutions and are left as they are.
    """
    _check_mode(mode)
    tf_same_types = tf_same_conv_types()
    for name, sub in module.named_modules():
        if not isinstance(sub, nn.Conv2d):
            continue
        kind = _conv_kind(sub, tf_same_types)
        spatial = any(k > 1 for k in sub.kernel_size)
        if _pads_somewhere(sub) or (kind == "own_forward" and spatial and mode != "zeros"):
            try:
                _set_mode(sub, mode, kind)
            except PaddingConversionError as err:
                raise PaddingConversionError(f"{name or type(module).__name__}: {err}") from None
    return module


def padding_modes(module: nn.Module) -> dict[str, str]:
    """``{module name: padding mode}`` of every padding conv in ``module`` (for checks and reports)."""
    return {name: sub.padding_mode for name, sub in module.named_modules() if _pads_somewhere(sub)}
