"""Segmentation networks: DeepLabV3+ on ResNet / WideResNet-38 / timm encoders, any padding mode."""
from __future__ import annotations

from .aspp import ASPP, ASPP_RATES
from .deeplabv3plus import (
    ENCODERS,
    MODEL_ARGUMENTS,
    TIMM_PREFIX,
    DeepLabV3Plus,
    build_encoder,
    build_model,
    encoder_name_error,
)
from .errors import ModelError
from .norm import NORMS, get_norm_layer
from .pretrained import LoadReport, PretrainedLoadError, load_pretrained
from .resnet import ResNetEncoder
from .timm_encoder import TimmEncoder, TimmEncoderError
from .wider_resnet import WiderResNet38

OUTPUT_STRIDES = tuple(ASPP_RATES)  # the output strides DeepLabV3Plus builds (config choices)

__all__ = ["ASPP", "ENCODERS", "MODEL_ARGUMENTS", "OUTPUT_STRIDES", "DeepLabV3Plus", "LoadReport", "ModelError",
           "NORMS", "PretrainedLoadError", "ResNetEncoder", "TIMM_PREFIX", "TimmEncoder", "TimmEncoderError",
           "WiderResNet38", "build_encoder", "build_model", "encoder_name_error", "get_norm_layer", "load_pretrained"]
