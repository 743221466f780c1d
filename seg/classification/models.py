"""Classifiers of the paper's section 4.1: torchvision's VGG-BN and ResNet with any padding mode."""
from __future__ import annotations

import torch
import torchvision
from torch import nn

from seg.engine.checkpoint import load_checkpoint
from seg.errors import ConfigError
from seg.models import ModelError
from seg.models.pretrained import strip_wrapper_prefix
from seg.nn import convert_padding

from .config import CLASSIFIER_ARCHS

__all__ = ["TinyNet", "build_classifier", "load_classifier_weights"]


class TinyNet(nn.Module):
    """Three padded 3x3 conv-BN-ReLU stages, global average pool, linear head: for tests and CPU demos.

    (B, 3, H, W) -> (B, num_classes). Every 3x3 conv pads, so the padding mode changes its output.
    """

    def __init__(self, num_classes: int = 4, width: int = 16):
        super().__init__()
        chans = (3, width, 2 * width, 4 * width)
        layers = []
        for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:])):
            layers += [nn.Conv2d(cin, cout, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(chans[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def load_classifier_weights(model: nn.Module, path: str) -> nn.Module:
    """Load weights strictly from `path`: a checkpoint {"model": state_dict, ...} or a bare state dict
    (e.g. torchvision's downloaded ``resnet50-*.pth``). Errors name the file and the offending keys."""
    ckpt = load_checkpoint(path, required=())
    state = strip_wrapper_prefix(ckpt["model"] if isinstance(ckpt.get("model"), dict) else ckpt)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    reshaped = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or reshaped:
        raise ModelError(f"weights in {path} do not fit {type(model).__name__}: {len(missing)} missing keys "
                         f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
                         f"{len(reshaped)} with another shape (e.g. {reshaped[:3]})")
    model.load_state_dict(state)
    return model


def build_classifier(arch: str, num_classes: int = 1000, padding_mode: str = "zeros",
                     pretrained: str | None = None) -> nn.Module:
    """torchvision's `arch` (random init, never downloaded) with every padded conv switched to `padding_mode`.

    arch: one of CLASSIFIER_ARCHS ("tinynet", "resnet18/50/101/152", "vgg16_bn", "vgg19_bn").
    pretrained: optional local weights file, loaded before the padding switch (padding adds no parameters,
    so weights trained under any padding load into any other). Model maps (B, 3, H, W) -> (B, num_classes).
    """
    if arch not in CLASSIFIER_ARCHS:
        raise ConfigError(f"unknown classifier arch {arch!r}; expected one of {CLASSIFIER_ARCHS}")
    if arch == "tinynet":
        model = TinyNet(num_classes)
    else:
        model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    if pretrained:
        load_classifier_weights(model, pretrained)
    return convert_padding(model, padding_mode)
