"""Any timm backbone with ``features_only`` support as a DeepLabV3+ encoder (``model.encoder: timm/<name>``).

timm is an optional dependency (``pip install 'partialpad-seg[timm]'``), imported only when such an encoder
is built. Its pretrained weights come from ``model.pretrained`` (``timm``/``imagenet``: timm's own cache, see
:mod:`seg.models.pretrained`; or a local file).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from ..nn import convert_padding
from .errors import ModelError
from .norm import convert_sync_batchnorm

if TYPE_CHECKING:  # timm is optional: imported for the annotation only
    from timm.models import FeatureInfo

#: feature reduction (stride) of the low-level skip, as for the ResNet encoders' layer1
SKIP_REDUCTION = 4


class TimmEncoderError(ModelError):
    """A timm encoder that cannot be built as asked (timm missing, unknown name, unsupported output stride)."""


def _import_timm():
    try:
        return importlib.import_module("timm")
    except ImportError:
        raise TimmEncoderError("model.encoder timm/<name> needs timm: pip install timm (or the package's "
                               "[timm] extra)") from None


def _create_features(timm, name: str, output_stride: int) -> nn.Module:
    key = f"model.encoder timm/{name}"
    if not timm.is_model(name.partition(".")[0]):  # "<arch>.<pretrained tag>" names the arch first
        raise TimmEncoderError(f"{key}: timm {timm.__version__} has no model {name!r}")
    try:
        return timm.create_model(name, pretrained=False, features_only=True, output_stride=output_stride)
    except TypeError as err:  # the constructor has no output_stride (ViTs, ...)
        raise TimmEncoderError(f"{key} cannot be dilated to output stride {output_stride}: {err}") from None
    except (RuntimeError, ValueError, AssertionError, NotImplementedError) as err:  # no features_only support
        raise TimmEncoderError(f"{key} has no features_only / output_stride support in timm: "
                               f"{' '.join(str(err).split())}") from None


class TimmEncoder(nn.Module):
    """timm ``features_only`` backbone -> ``(skip, out)`` for DeepLabV3+.

    ``skip`` is the feature with reduction 4 (``feature_info``), ``out`` the last one, whose reduction must be
    ``output_stride`` (timm dilates the model; one that cannot is refused). Every padding conv, timm's
    TensorFlow-"same" ``Conv2dSame`` included, follows ``padding_mode`` (:func:`seg.nn.convert_padding`).
    ``norm="syncbn"`` turns every norm into SyncBatchNorm; timm's fused norm+activation layers keep their
    activation (:func:`seg.models.norm.convert_sync_batchnorm`).
    State-dict keys are the timm model's under ``body.``.
    """

    #: prefix of this encoder's keys in front of the timm model's own (seg.models.pretrained adds it)
    state_dict_prefix = "body."

    def __init__(self, name: str, output_stride: int = 16, padding_mode: str = "zeros", norm: str = "bn"):
        super().__init__()
        timm = _import_timm()
        body = _create_features(timm, name, output_stride)
        # a plain attribute of timm's features_only models (torch types Module attributes as Tensor | Module)
        feature_info = cast("FeatureInfo", body.feature_info)
        reductions, channels = feature_info.reduction(), feature_info.channels()
        if reductions[-1] != output_stride:
            raise TimmEncoderError(f"model.encoder timm/{name}: its last feature has reduction {reductions[-1]}, "
                                   f"not the output stride {output_stride} asked (timm cannot dilate it)")
        if SKIP_REDUCTION not in reductions:
            raise TimmEncoderError(f"model.encoder timm/{name} has no feature with reduction {SKIP_REDUCTION} for "
                                   f"the decoder's skip; its reductions are {reductions}")
        self.skip_index = reductions.index(SKIP_REDUCTION)
        self.timm_name = name  # model.pretrained "timm" asks timm for this model's weights
        if norm == "syncbn":
            body = convert_sync_batchnorm(body)
        self.body = convert_padding(body, padding_mode)
        self.skip_channels = channels[self.skip_index]
        self.out_channels = channels[-1]
        self.output_stride = output_stride
        self.feature_strides = {f"feature{i}": r for i, r in enumerate(reductions)}

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every feature ``{"feature0", ...}``; strides in ``self.feature_strides``."""
        return {f"feature{i}": f for i, f in enumerate(self.body(x))}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.body(x)
        return feats[self.skip_index], feats[-1]
