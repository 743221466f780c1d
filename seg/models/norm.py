"""Normalisation layers selectable by name (``model.norm`` in the config)."""
from __future__ import annotations

import importlib
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


def _is_timm_norm(module: nn.Module) -> bool:
    """A timm BatchNorm subclass (BatchNormAct2d, SyncBatchNormAct, ...): these may fuse an activation and a
    drop layer that torch's own converters do not know about."""
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and type(module).__module__.startswith("timm.")


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm of ``module`` as SyncBatchNorm, same parameters and buffers.

    torch's converter turns timm's fused norm+activation layers (``timm.layers.BatchNormAct2d``) into plain
    SyncBatchNorm and drops their activation; with such layers present timm's own converter runs, which makes
    them ``SyncBatchNormAct`` keeping activation and drop layer. timm is imported only then (it is optional,
    and already loaded when the model holds its layers).
    """
    if any(_is_timm_norm(m) for m in module.modules()):
        return importlib.import_module("timm.layers").convert_sync_batchnorm(module)
    return nn.SyncBatchNorm.convert_sync_batchnorm(module)


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Every SyncBatchNorm of ``module`` back to a per-process norm holding the same parameters and buffers:
    BatchNorm2d, or timm's ``BatchNormAct2d`` with the same activation and drop layer for timm's
    ``SyncBatchNormAct`` (SyncBatchNorm only runs on CUDA; a CPU run needs the per-process layer)."""
    if isinstance(module, nn.SyncBatchNorm):
        args = (module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if _is_timm_norm(module):
            per_process = importlib.import_module("timm.layers").BatchNormAct2d(*args)
            per_process.act, per_process.drop = module.act, module.drop
        else:
            per_process = nn.BatchNorm2d(*args)
        per_process.load_state_dict(module.state_dict())
        return per_process.train(module.training)
    for name, child in module.named_children():
        setattr(module, name, revert_sync_batchnorm(child))
    return module


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
