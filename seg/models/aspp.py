"""Atrous Spatial Pyramid Pooling (DeepLabV3+) with every dilated conv built by the padding factory."""
from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import create_conv2d
from ..nn.partial_conv import conv_pads
from .errors import ModelError
from .norm import conv_norm_act

#: dilation rates of the three 3x3 branches per output stride
#: (DeepLabV3, Chen et al. 2017: 6/12/18 at OS16, doubled at OS8)
ASPP_RATES = {8: (12, 24, 36), 16: (6, 12, 18)}


class ImagePooling(nn.Module):
    """Global average pool -> 1x1 conv -> norm -> ReLU, broadcast back to the input size.

    (B, C_in, H, W) -> (B, C_out, H, W). Its norm sees one value per channel and image, so training
    it with BatchNorm needs a batch of 2 or more (SyncBatchNorm: 2 or more over all GPUs).
    """

    def __init__(self, in_channels: int, out_channels: int, norm_layer: Callable[[int], nn.Module]):
        super().__init__()
        self.conv = conv_norm_act(nn.Conv2d(in_channels, out_channels, 1, bias=False), norm_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.conv(F.adaptive_avg_pool2d(x, 1))
        return pooled.expand(-1, -1, *x.shape[-2:])


class ASPP(nn.Module):
    """Image pooling + 1x1 + three dilated 3x3 branches, concatenated and projected by a 1x1.

    (B, in_channels, H, W) -> (B, out_channels, H, W). The 3x3 branches pad by their rate (up to 36
    at OS 8), so their border bands are wide: this is where the padding mode matters most.
    """

    def __init__(self, in_channels: int, out_channels: int = 256, rates: tuple[int, ...] = (12, 24, 36),
                 padding_mode: str = "zeros", norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d):
        super().__init__()
        self.rates = tuple(rates)
        branches = [conv_norm_act(nn.Conv2d(in_channels, out_channels, 1, bias=False), norm_layer)]
        for rate in self.rates:
            conv = create_conv2d(in_channels, out_channels, 3, dilation=rate, bias=False, padding_mode=padding_mode)
            branches.append(conv_norm_act(conv, norm_layer))
        self.branches = nn.ModuleList(branches)
        self.pooling = ImagePooling(in_channels, out_channels, norm_layer)
        self.project = conv_norm_act(
            nn.Conv2d(out_channels * (len(branches) + 1), out_channels, 1, bias=False), norm_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_reflect_size(x)
        outs = [branch(x) for branch in self.branches]
        outs.append(self.pooling(x))
        return self.project(torch.cat(outs, dim=1))

    def _check_reflect_size(self, x: torch.Tensor) -> None:
        # reflect padding cannot pad by more than the map size; say which conv and why, not torch's
        # generic message from deep inside F.pad
        for branch in self.branches[1:]:
            conv = cast(nn.Conv2d, cast(nn.Sequential, branch)[0])  # conv_norm_act: (conv, norm, ReLU)
            (pad, _), _ = conv_pads(conv)  # the top padding; create_conv2d pads all sides alike
            if conv.padding_mode == "reflect" and min(x.shape[-2:]) <= pad:
                raise ModelError(
                    f"ASPP branch with rate {conv.dilation[0]} uses reflect padding of {pad} px, which needs "
                    f"a feature map larger than {pad}; got {tuple(x.shape[-2:])} (use a bigger input, or "
                    f"another padding mode)")
