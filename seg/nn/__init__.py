"""Padding layers: partial-convolution based padding, the conv factory and the padding converter."""
from . import custom_op  # noqa: F401  registers seg::partial_conv2d, PartialConv2d's "custom_op" compile path
from .factory import (
    PADDING_MODES,
    PAPER_PAIR,
    PaddingConversionError,
    PaddingModeError,
    convert_padding,
    create_conv2d,
    has_padding,
    padding_modes,
    set_padding_mode,
    tf_same_conv_types,
)
from .partial_conv import (
    COMPILE_PATHS,
    REWEIGHT_STRATEGIES,
    PartialConv2d,
    PartialConv2dSame,
    reweight_strategies,
    set_compile_path,
    set_reweight_strategy,
    tf_same_pads,
)
from .ratio import PaddingError

__all__ = ["COMPILE_PATHS", "PADDING_MODES", "PAPER_PAIR", "REWEIGHT_STRATEGIES", "PaddingConversionError",
           "PaddingError", "PaddingModeError", "PartialConv2d", "PartialConv2dSame", "reweight_strategies",
           "set_compile_path", "set_reweight_strategy", "convert_padding",
           "create_conv2d", "has_padding", "padding_modes", "set_padding_mode", "tf_same_conv_types", "tf_same_pads"]
