"""DeepLabV3+ decoder: reduced low-level skip + upsampled ASPP output -> two 3x3 convs -> classifier."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import create_conv2d
from .norm import conv_norm_act


class DeepLabV3PlusDecoder(nn.Module):
    """``forward(skip, x)``: skip (B, skip_channels, Hs, Ws), x (B, in_channels, h, w) ->
    logits (B, num_classes, Hs, Ws) at the skip's resolution.

    The skip is reduced to ``reduced_channels`` (48) by a 1x1 so that the 256 ASPP channels dominate
    the concatenation; ``classifier`` is the only layer whose shape depends on ``num_classes``.
    """

    def __init__(self, skip_channels: int, in_channels: int = 256, num_classes: int = 19,
                 channels: int = 256, reduced_channels: int = 48, padding_mode: str = "zeros",
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d):
        super().__init__()
        self.reduce = conv_norm_act(nn.Conv2d(skip_channels, reduced_channels, 1, bias=False), norm_layer)
        self.fuse = nn.Sequential(
            conv_norm_act(create_conv2d(in_channels + reduced_channels, channels, 3, bias=False,
                                        padding_mode=padding_mode), norm_layer),
            conv_norm_act(create_conv2d(channels, channels, 3, bias=False, padding_mode=padding_mode), norm_layer),
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = self.fuse(torch.cat([self.reduce(skip), x], dim=1))
        return self.classifier(x)
