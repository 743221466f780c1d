"""The one place that decides padding: a conv factory for seg's models and a converter for any model."""
from __future__ import annotations

from torch import nn

from .partial_conv import PartialConv2d, conv_pads

PADDING_MODES = ("zeros", "reflect", "replicate", "partial")


def _check_mode(mode: str) -> None:
    if mode not in PADDING_MODES:
        raise ValueError(f"unknown padding mode {mode!r}; expected one of {PADDING_MODES}")


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
    conv_cls = PartialConv2d if padding_mode == "partial" else nn.Conv2d
    conv = conv_cls(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                    dilation=dilation, groups=groups, bias=bias)
    if padding_mode != "partial":
        conv.padding_mode = padding_mode
    return conv


def has_padding(conv: nn.Conv2d) -> bool:
    """True when ``conv`` pads its input at all (so its padding mode matters)."""
    return any(p for pair in conv_pads(conv) for p in pair)


def set_padding_mode(conv: nn.Conv2d, mode: str) -> nn.Conv2d:
    """Switch one conv to ``mode`` in place, keeping its parameters, buffers and hooks.

    Only the class (``nn.Conv2d`` <-> ``PartialConv2d``) and ``padding_mode`` change, which is why
    state_dict keys and values are untouched and a round trip restores the exact original.
    """
    _check_mode(mode)
    if type(conv) not in (nn.Conv2d, PartialConv2d):
        raise TypeError(f"cannot switch padding of {type(conv).__name__} (a subclass of nn.Conv2d with its "
                        "own forward); only plain nn.Conv2d and PartialConv2d are converted")
    # nn.Conv2d pads reflect/replicate from this cached tuple, made in __init__; rebuild it so a conv
    # whose `padding` was edited after construction pads by what it says
    (top, bottom), (left, right) = conv_pads(conv)
    conv._reversed_padding_repeated_twice = [left, right, top, bottom]
    if mode == "partial":
        conv.__class__ = PartialConv2d
    else:
        conv.__class__ = nn.Conv2d
        conv.__dict__.pop("_ratio_plans", None)
    conv.padding_mode = mode
    return conv


def convert_padding(module: nn.Module, mode: str) -> nn.Module:
    """Switch every padded ``nn.Conv2d`` inside ``module`` (any model, torchvision's too) to ``mode``.

    In place; returns ``module``. Convs without padding are left alone; parameters and state_dict
    keys are identical before and after; converting twice changes nothing.
    """
    _check_mode(mode)
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Conv2d) and has_padding(sub):
            try:
                set_padding_mode(sub, mode)
            except TypeError as err:
                raise TypeError(f"{name or type(module).__name__}: {err}") from None
    return module


def padding_modes(module: nn.Module) -> dict[str, str]:
    """``{module name: padding mode}`` of every padded conv in ``module`` (for checks and reports)."""
    return {name: sub.padding_mode for name, sub in module.named_modules()
            if isinstance(sub, nn.Conv2d) and has_padding(sub)}
