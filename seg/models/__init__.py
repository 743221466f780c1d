"""Segmentation networks: DeepLabV3+ on ResNet / WideResNet-38 encoders, any padding mode."""
from .aspp import ASPP, ASPP_RATES
from .deeplabv3plus import ENCODERS, DeepLabV3Plus, build_encoder
from .norm import NORMS, get_norm_layer
from .pretrained import LoadReport, PretrainedLoadError, load_pretrained
from .resnet import ResNetEncoder
from .wider_resnet import WiderResNet38

OUTPUT_STRIDES = tuple(ASPP_RATES)  # the output strides DeepLabV3Plus builds (config choices)

__all__ = ["ASPP", "ENCODERS", "OUTPUT_STRIDES", "DeepLabV3Plus", "LoadReport", "NORMS", "PretrainedLoadError",
           "ResNetEncoder", "WiderResNet38", "build_encoder", "get_norm_layer", "load_pretrained"]
