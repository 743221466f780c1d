"""Padding layers: partial-convolution based padding, the conv factory and the padding converter."""
from .factory import PADDING_MODES, convert_padding, create_conv2d, has_padding, padding_modes, set_padding_mode
from .partial_conv import PartialConv2d

__all__ = ["PADDING_MODES", "PartialConv2d", "convert_padding", "create_conv2d", "has_padding",
           "padding_modes", "set_padding_mode"]
