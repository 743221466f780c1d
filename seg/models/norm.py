"""Normalisation layers selectable by name (``model.norm`` in the config)."""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .errors import ModelError

NORMS = ("bn", "syncbn")


def get_norm_layer(norm: str) -> Callable[[int], nn.Module]:
    """Constructor ``num_features -> module`` for ``norm``: "bn" (BatchNorm2d) or "syncbn" (SyncBatchNorm).

    SyncBatchNorm only synchronises on GPU under an initialised process group; the engine swaps it
    for BatchNorm2d on CPU, so the model builds it unconditionally.
    """
    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "syncbn":
        return nn.SyncBatchNorm
    raise ModelError(f"unknown norm {norm!r}; expected one of {NORMS}")


def conv_norm_act(conv: nn.Conv2d, norm_layer: Callable[[int], nn.Module]) -> nn.Sequential:
    """``conv -> norm -> ReLU`` as one ``nn.Sequential`` (keys ``0.*`` conv, ``1.*`` norm)."""
    return nn.Sequential(conv, norm_layer(conv.out_channels), nn.ReLU(inplace=True))


def init_weights(module: nn.Module) -> None:
    """He init for every conv (ReLU networks), unit/zero affine for every norm; pretrained weights overwrite it."""
    for sub in module.modules():
        if isinstance(sub, nn.Conv2d):
            nn.init.kaiming_normal_(sub.weight, mode="fan_out", nonlinearity="relu")
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(sub.weight)
            nn.init.zeros_(sub.bias)
