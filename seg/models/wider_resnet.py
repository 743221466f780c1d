"""WideResNet-38 ("WiderResNetA2", Wu et al. 2016) as a segmentation encoder (arXiv 1811.11718 §4.2).

Module names and structure follow Mapillary's In-Place ABN / NVIDIA's semantic-segmentation
``wider_resnet38_a2`` (``mod1``..``mod7``, ``pool2``, ``pool3``, ``blockN.bn1.0.weight``, ...), so
NVIDIA's ImageNet checkpoint loads key for key (its ``bn_out`` and ``classifier`` are ImageNet-only
and reported as unexpected). Every padded conv is built by :func:`seg.nn.create_conv2d`.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from ..nn import create_conv2d
from .errors import ModelError
from .norm import init_weights

#: (stage name, blocks, channels); two channels = plain pre-activation block, three = bottleneck
WRN38_STAGES = (
    ("mod2", 3, (128, 128)),
    ("mod3", 3, (256, 256)),
    ("mod4", 6, (512, 512)),
    ("mod5", 3, (512, 1024)),
    ("mod6", 1, (512, 1024, 2048)),
    ("mod7", 1, (1024, 2048, 4096)),
)

#: (stride of the first block, dilation) of mod4..mod7 per output stride. mod2 and mod3 are
#: reached through max-pools (strides 2 and 4), so mod4's stride gives OS 8.
WRN38_STRIDE_DILATION = {
    8: {"mod4": (2, 1), "mod5": (1, 2), "mod6": (1, 4), "mod7": (1, 4)},
    16: {"mod4": (2, 1), "mod5": (2, 1), "mod6": (1, 2), "mod7": (1, 2)},
}

#: Dropout2d probability inside the bottleneck stages, as in the reference model
WRN38_DROPOUT = {"mod6": 0.3, "mod7": 0.5}


def norm_relu(norm_layer: Callable[[int], nn.Module], channels: int) -> nn.Sequential:
    """Pre-activation ``norm -> ReLU`` (NVIDIA's ``bnrelu``; keys ``0.weight``, ``0.running_mean``...)."""
    return nn.Sequential(norm_layer(channels), nn.ReLU(inplace=True))


class IdentityResidualBlock(nn.Module):
    """Pre-activation residual block of WiderResNetA2.

    ``channels`` of length 2: 3x3 -> 3x3; length 3: bottleneck 1x1 -> 3x3 -> 1x1. The shortcut is
    the identity, or a 1x1 ``proj_conv`` of the pre-activated input when stride or width change.
    Shapes: (B, in_channels, H, W) -> (B, channels[-1], ceil(H/stride), ceil(W/stride)).
    """

    def __init__(self, in_channels: int, channels: tuple[int, ...], stride: int = 1, dilation: int = 1,
                 dropout: float = 0.0, padding_mode: str = "zeros",
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d):
        super().__init__()
        if len(channels) not in (2, 3):
            raise ModelError(f"channels must hold 2 or 3 values; got {channels}")
        self.bn1 = norm_relu(norm_layer, in_channels)
        if len(channels) == 2:
            layers = [
                ("conv1", create_conv2d(in_channels, channels[0], 3, stride, dilation=dilation, bias=False,
                                        padding_mode=padding_mode)),
                ("bn2", norm_relu(norm_layer, channels[0])),
                ("conv2", create_conv2d(channels[0], channels[1], 3, dilation=dilation, bias=False,
                                        padding_mode=padding_mode)),
            ]
        else:
            layers = [
                ("conv1", nn.Conv2d(in_channels, channels[0], 1, stride, bias=False)),
                ("bn2", norm_relu(norm_layer, channels[0])),
                ("conv2", create_conv2d(channels[0], channels[1], 3, dilation=dilation, bias=False,
                                        padding_mode=padding_mode)),
                ("bn3", norm_relu(norm_layer, channels[1])),
                ("conv3", nn.Conv2d(channels[1], channels[2], 1, bias=False)),
            ]
        if dropout > 0:
            # the reference puts dropout right before the last conv of the block
            layers.insert(len(layers) - 1, ("dropout", nn.Dropout2d(dropout)))
        self.convs = nn.Sequential(OrderedDict(layers))
        self.proj_conv: nn.Conv2d | None = None
        if stride != 1 or in_channels != channels[-1]:
            self.proj_conv = nn.Conv2d(in_channels, channels[-1], 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.bn1(x)
        shortcut = x if self.proj_conv is None else self.proj_conv(pre)
        return self.convs(pre) + shortcut


class WiderResNet38(nn.Module):
    """WideResNet-38 trunk (stem ``mod1`` + stages ``mod2``..``mod7``) as a DeepLabV3+ encoder.

    ``forward(x)``: x (B, 3, H, W) -> ``(skip, out)`` with skip = mod2 (B, 128, ~H/2, ~W/2) and
    out = mod7 (B, 4096, ~H/os, ~W/os). The skip is stage 2 at stride 2, as in NVIDIA's DeepWV3Plus
    (not stride 4 as for ResNet): that is the model the paper's WRN-38 numbers come from.
    """

    # stages and pools added by name in __init__ (add_module): declared for type checkers
    mod1: nn.Sequential
    pool2: nn.MaxPool2d
    mod2: nn.Sequential
    pool3: nn.MaxPool2d
    mod3: nn.Sequential
    mod4: nn.Sequential
    mod5: nn.Sequential
    mod6: nn.Sequential
    mod7: nn.Sequential

    def __init__(self, output_stride: int = 8, padding_mode: str = "zeros",
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d):
        super().__init__()
        if output_stride not in WRN38_STRIDE_DILATION:
            raise ModelError(f"WideResNet-38 output_stride must be one of {tuple(WRN38_STRIDE_DILATION)}; "
                             f"got {output_stride!r}")
        stride_dilation = WRN38_STRIDE_DILATION[output_stride]
        self.mod1 = nn.Sequential(OrderedDict([
            ("conv1", create_conv2d(3, 64, 3, bias=False, padding_mode=padding_mode))]))
        in_channels = 64
        for name, num_blocks, channels in WRN38_STAGES:
            stride, dilation = stride_dilation.get(name, (1, 1))
            blocks = []
            for index in range(num_blocks):
                blocks.append((f"block{index + 1}", IdentityResidualBlock(
                    in_channels, channels, stride if index == 0 else 1, dilation,
                    WRN38_DROPOUT.get(name, 0.0), padding_mode, norm_layer)))
                in_channels = channels[-1]
            if name in ("mod2", "mod3"):
                self.add_module(f"pool{name[-1]}", nn.MaxPool2d(3, stride=2, padding=1))
            self.add_module(name, nn.Sequential(OrderedDict(blocks)))
        self.out_channels: int = in_channels
        self.skip_channels: int = WRN38_STAGES[0][2][-1]
        self.output_stride = output_stride
        self.feature_strides = {"mod1": 1, "mod2": 2, "mod3": 4, "mod4": 8}
        stride = 8
        for name in ("mod5", "mod6", "mod7"):
            stride *= stride_dilation[name][0]
            self.feature_strides[name] = stride
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every stage output ``{"mod1", ..., "mod7"}``; strides in ``self.feature_strides``."""
        feats = {"mod1": self.mod1(x)}
        feats["mod2"] = self.mod2(self.pool2(feats["mod1"]))
        x = self.mod3(self.pool3(feats["mod2"]))
        feats["mod3"] = x
        for name in ("mod4", "mod5", "mod6", "mod7"):
            x = getattr(self, name)(x)
            feats[name] = x
        return feats

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.mod2(self.pool2(self.mod1(x)))
        x = self.mod4(self.mod3(self.pool3(skip)))
        out = self.mod7(self.mod6(self.mod5(x)))
        return skip, out
