"""Normalisation layers selectable by name (``model.norm`` in the config)."""
from __future__ import annotations

from typing import Callable

from torch import nn

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
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def conv_norm_act(conv: nn.Conv2d, norm_layer: Callable[[int], nn.Module]) -> nn.Sequential:
    """``conv -> norm -> ReLU`` as one ``nn.Sequential`` (keys ``0.*`` conv, ``1.*`` norm)."""
    return nn.Sequential(conv, norm_layer(conv.out_channels), nn.ReLU(inplace=True))
