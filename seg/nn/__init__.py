"""Padding layers: partial-convolution based padding, the conv factory and the padding converter."""
from .factory import PADDING_MODES, convert_padding, create_conv2d, has_padding, padding_modes, set_padding_mode
from .partial_conv import REWEIGHT_STRATEGIES, PartialConv2d, set_reweight_strategy

__all__ = ["PADDING_MODES", "REWEIGHT_STRATEGIES", "PartialConv2d", "set_reweight_strategy", "convert_padding",
           "create_conv2d", "has_padding", "padding_modes", "set_padding_mode"]
