"""DeepLabV3+ (Chen et al. 2018) with ResNet or WideResNet-38 encoders and any padding mode (arXiv 1811.11718 §4.2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import PADDING_MODES
from .aspp import ASPP, ASPP_RATES
from .decoder import DeepLabV3PlusDecoder
from .errors import ModelError
from .norm import get_norm_layer, init_weights
from .pretrained import LoadReport, Weights, canonical_weights, load_pretrained
from .resnet import RESNETS, ResNetEncoder
from .timm_encoder import TimmEncoder
from .wider_resnet import WiderResNet38

ENCODERS = (*RESNETS, "wider_resnet38")
TIMM_PREFIX = "timm/"  # model.encoder "timm/<name>": any timm model with features_only support
Encoder = ResNetEncoder | WiderResNet38 | TimmEncoder


def encoder_name_error(name: str) -> str | None:
    """Why ``name`` is no encoder :func:`build_encoder` builds, or None if it is one (the config schema's check)."""
    if name in ENCODERS or (name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX)):
        return None
    return f"unknown encoder {name!r}; expected one of {list(ENCODERS)} or {TIMM_PREFIX}<timm model name>"


def build_encoder(name: str, output_stride: int, padding_mode: str, norm: str) -> Encoder:
    """Encoder ``name`` with ``.out_channels``, ``.skip_channels`` and ``forward(x) -> (skip, out)``:
    one of :data:`ENCODERS` or ``timm/<timm model name>`` (:class:`TimmEncoder`)."""
    norm_layer = get_norm_layer(norm)
    error = encoder_name_error(name)
    if error is not None:
        raise ModelError(error)
    if name in RESNETS:
        return ResNetEncoder(name, output_stride, padding_mode, norm_layer)
    if name == "wider_resnet38":
        return WiderResNet38(output_stride, padding_mode, norm_layer)
    return TimmEncoder(name[len(TIMM_PREFIX):], output_stride, padding_mode, norm)


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ semantic segmentation network.

    Args:
        encoder: one of :data:`ENCODERS` ("resnet50", "wider_resnet38", "resnet18/34/101") or "timm/<name>".
        num_classes: output channels of the classifier.
        output_stride: 8 or 16 (dilation replaces stride in the last stages).
        padding_mode: one of ``seg.nn.PADDING_MODES``; every padded conv of encoder, ASPP and decoder uses it.
            Parameters and state_dict keys do not depend on it, so ``seg.nn.convert_padding(model, mode)``
            switches a trained model afterwards.
        norm: "bn" or "syncbn".
        weights: pretrained weights to load (``model.pretrained``'s spellings, :mod:`seg.models.pretrained`):
            "imagenet" or True (the encoder's ImageNet weights), a torchvision weights enum member such as
            ``ResNet50_Weights.IMAGENET1K_V1`` or its name, "timm", or a checkpoint path; None: random init.

    ``forward(x)``: x (B, 3, H, W), any H, W -> logits (B, num_classes, H, W).
    """

    def __init__(self, encoder: str = "resnet50", num_classes: int = 19, output_stride: int = 8,
                 padding_mode: str = "zeros", norm: str = "bn", weights: Weights = None):
        super().__init__()
        if output_stride not in ASPP_RATES:
            raise ModelError(f"output_stride must be one of {tuple(ASPP_RATES)}; got {output_stride!r}")
        if padding_mode not in PADDING_MODES:
            raise ModelError(f"unknown padding mode {padding_mode!r}; expected one of {PADDING_MODES}")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ModelError(f"num_classes must be a positive int; got {num_classes!r}")
        norm_layer = get_norm_layer(norm)
        self.encoder_name = encoder  # what "imagenet" weights mean depends on it
        self.encoder = build_encoder(encoder, output_stride, padding_mode, norm)
        self.aspp = ASPP(self.encoder.out_channels, 256, ASPP_RATES[output_stride], padding_mode, norm_layer)
        self.decoder = DeepLabV3PlusDecoder(self.encoder.skip_channels, 256, num_classes,
                                            padding_mode=padding_mode, norm_layer=norm_layer)
        init_weights(self.aspp)
        init_weights(self.decoder)
        # the load report of ``weights`` (None without pretrained weights)
        self.pretrained_report: LoadReport | None = None
        if canonical_weights(weights, encoder) is not None:
            self.pretrained_report = load_pretrained(self, weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ModelError(f"DeepLabV3Plus expects images (B, 3, H, W); got {tuple(x.shape)}")
        skip, out = self.encoder(x)
        logits = self.decoder(skip, self.aspp(out))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


#: config ``model`` keys -> DeepLabV3Plus arguments; the config calls the padding mode ``padding``
MODEL_ARGUMENTS = {"encoder": "encoder", "num_classes": "num_classes", "output_stride": "output_stride",
                   "padding": "padding_mode", "norm": "norm"}


def build_model(model_cfg: dict, weights: Weights = None) -> DeepLabV3Plus:
    """DeepLabV3Plus from a config's ``model`` section (keys of ``seg.config.SCHEMA["model"]``; missing ones
    take the constructor's defaults), with ``weights`` (else ``model_cfg["pretrained"]``) loaded when set (any
    spelling of :mod:`seg.models.pretrained`); the load report is kept in ``model.pretrained_report`` (None
    without pretrained weights)."""
    unknown = sorted(set(model_cfg) - set(MODEL_ARGUMENTS) - {"pretrained"})
    if unknown:
        raise ModelError(f"unknown model config keys {unknown}; expected {sorted([*MODEL_ARGUMENTS, 'pretrained'])}")
    arguments = {MODEL_ARGUMENTS[key]: value for key, value in model_cfg.items() if key in MODEL_ARGUMENTS}
    return DeepLabV3Plus(**arguments, weights=model_cfg.get("pretrained") if weights is None else weights)
