"""ResNet encoders: torchvision's own definition, dilated to output stride 8 or 16, padding converted.

Keeping torchvision's modules (and names) untouched is what lets a torchvision ImageNet
``state_dict`` load unchanged; only strides, dilations and the padding mode of padded convs change.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

from ..nn import convert_padding
from .errors import ModelError

RESNETS = {
    "resnet18": tv_resnet.resnet18,
    "resnet34": tv_resnet.resnet34,
    "resnet50": tv_resnet.resnet50,
    "resnet101": tv_resnet.resnet101,
}

#: built from BasicBlock, which torchvision will not dilate (we do it with :func:`dilate_layer`)
BASIC_BLOCK_RESNETS = ("resnet18", "resnet34")

#: torchvision's ``replace_stride_with_dilation`` flags (layer2, layer3, layer4) per output stride
DILATE_FLAGS = {8: (False, True, True), 16: (False, False, True), 32: (False, False, False)}

STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")


def dilate_layer(layer: nn.Sequential, previous_dilation: int, dilation: int) -> nn.Sequential:
    """Turn a stride-2 ResNet layer into a stride-1 dilated one, in place; returns ``layer``.

    Same rule as torchvision's ``replace_stride_with_dilation``: the first block keeps
    ``previous_dilation``, the others use ``dilation``. Needed because torchvision's BasicBlock
    (ResNet-18/34) refuses dilation; works for Bottleneck too (the tests check it against torchvision).
    """
    for index, block in enumerate(layer):
        block_dilation = previous_dilation if index == 0 else dilation
        for name, conv in list(block.named_modules()):
            if isinstance(conv, nn.Conv2d):
                parent, _, child = name.rpartition(".")
                setattr(block.get_submodule(parent), child, _undecimated_conv(conv, block_dilation))
    return layer


def _undecimated_conv(conv: nn.Conv2d, dilation: int) -> nn.Conv2d:
    """Stride-1 copy of ``conv`` (same weights), dilated by ``dilation`` if it is spatial.

    A new module rather than edited attributes: ``nn.Conv2d`` caches its padding for non-zero
    padding modes at construction, so editing ``padding`` afterwards would go stale.
    """
    (kh, kw), (dh, dw) = conv.kernel_size, conv.dilation  # torch types them tuple[int, ...]; a Conv2d has two
    spatial = (kh, kw) != (1, 1)
    padding: str | tuple[int, int]
    if spatial:
        padding = (dilation * (kh - 1) // 2, dilation * (kw - 1) // 2)
    elif isinstance(conv.padding, str):
        padding = conv.padding
    else:
        padding = (conv.padding[0], conv.padding[1])
    new = nn.Conv2d(conv.in_channels, conv.out_channels, (kh, kw), stride=1, padding=padding,
                    dilation=dilation if spatial else (dh, dw), groups=conv.groups,
                    bias=conv.bias is not None, padding_mode=conv.padding_mode)
    new.load_state_dict(conv.state_dict())
    return new


def build_resnet_trunk(name: str, output_stride: int, norm_layer: Callable[[int], nn.Module]) -> tv_resnet.ResNet:
    """torchvision ResNet ``name`` (random init) at ``output_stride``, still with its fc head."""
    if name not in RESNETS:
        raise ModelError(f"unknown ResNet {name!r}; expected one of {tuple(RESNETS)}")
    if output_stride not in DILATE_FLAGS:
        raise ModelError(f"output_stride must be one of {tuple(DILATE_FLAGS)}; got {output_stride!r}")
    flags = DILATE_FLAGS[output_stride]
    if name not in BASIC_BLOCK_RESNETS:
        return RESNETS[name](weights=None, norm_layer=norm_layer, replace_stride_with_dilation=list(flags))
    trunk = RESNETS[name](weights=None, norm_layer=norm_layer)
    dilation = 1
    for layer_name, dilate in zip(("layer2", "layer3", "layer4"), flags):
        if dilate:
            dilate_layer(getattr(trunk, layer_name), dilation, dilation * 2)
            dilation *= 2
    return trunk


class ResNetEncoder(nn.Module):
    """torchvision ResNet without its classifier, as a DeepLabV3+ encoder.

    ``forward(x)``: x (B, 3, H, W) -> ``(skip, out)``: layer1 (B, skip_channels, ~H/4, ~W/4) and
    layer4 (B, out_channels, ~H/os, ~W/os). State_dict keys are torchvision's (``conv1.weight``,
    ``layer1.0.conv1.weight``, ...), without ``fc.*``.
    """

    # torchvision's children, moved over by add_module: declared for type checkers
    conv1: nn.Conv2d
    bn1: nn.Module
    relu: nn.Module
    maxpool: nn.Module
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(self, name: str = "resnet50", output_stride: int = 8, padding_mode: str = "zeros",
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d):
        super().__init__()
        trunk = build_resnet_trunk(name, output_stride, norm_layer)
        convert_padding(trunk, padding_mode)
        for child in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            self.add_module(child, getattr(trunk, child))
        self.out_channels: int = trunk.fc.in_features  # layer4's width, what the classifier head reads
        # every torchvision ResNet widens 64 * expansion channels in layer1 to 512 * expansion in layer4
        self.skip_channels: int = self.out_channels // 8
        self.output_stride = output_stride
        self.feature_strides = {"stem": 2, "layer1": 4}
        stride = 4
        for name, dilate in zip(STAGES[2:], DILATE_FLAGS[output_stride]):
            stride *= 1 if dilate else 2
            self.feature_strides[name] = stride

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every stage output: ``{"stem", "layer1", ..., "layer4"}`` (stem = after conv1/bn1/relu)."""
        feats = {"stem": self.relu(self.bn1(self.conv1(x)))}
        x = self.maxpool(feats["stem"])
        for name in STAGES[1:]:
            x = getattr(self, name)(x)
            feats[name] = x
        return feats

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        skip = self.layer1(x)
        out = self.layer4(self.layer3(self.layer2(skip)))
        return skip, out
