"""Padding layers: partial-convolution based padding, the conv factory and the padding converter."""
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
    REWEIGHT_STRATEGIES,
    PartialConv2d,
    PartialConv2dSame,
    reweight_strategies,
    set_reweight_strategy,
    tf_same_pads,
)
from .ratio import PaddingError

__all__ = ["PADDING_MODES", "PAPER_PAIR", "REWEIGHT_STRATEGIES", "PaddingConversionError", "PaddingError",
           "PaddingModeError", "PartialConv2d", "PartialConv2dSame", "reweight_strategies", "set_reweight_strategy",
           "convert_padding",
           "create_conv2d", "has_padding", "padding_modes", "set_padding_mode", "tf_same_conv_types", "tf_same_pads"]
