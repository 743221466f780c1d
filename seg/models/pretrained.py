"""Loading pretrained weights into a model, loudly: every missing/unexpected key is reported.

``model.pretrained`` (and the Python builders' ``weights=``) names the weights as the ecosystem spells them:
  * ``imagenet`` (or ``True`` in Python): the encoder's ImageNet weights -- torchvision's ``IMAGENET1K_V1`` for
    the ResNets (:data:`IMAGENET_WEIGHTS`), timm's default pretrained tag for ``timm/<name>`` encoders;
    WideResNet-38 has no downloadable weights (a local file, see below);
  * a torchvision weights enum member (``ResNet50_Weights.IMAGENET1K_V1`` in Python), its name
    (``"ResNet50_Weights.IMAGENET1K_V1"``) or ``"torchvision:ResNet50_Weights.IMAGENET1K_V1"``: read from
    torchvision's cache (``$TORCH_HOME/hub/checkpoints``), downloaded there first if missing;
  * ``timm``: a ``timm/<name>`` encoder's pretrained weights through timm's own cache (the Hugging Face hub
    cache, ``$HF_HOME/hub``); offline and not cached, a one-line error names that cache;
  * a local file, in any of the layouts below.

Accepted files (``torch.load``-able, tensors only):
  * a torchvision ResNet ``state_dict`` (``conv1.weight``, ..., ``fc.*``) -> loaded into the encoder;
  * NVIDIA's WideResNet-38 ImageNet checkpoint (``{"state_dict": {"module.mod1.conv1.weight": ...}}``)
    -> loaded into the encoder, DataParallel ``module.`` prefix stripped;
  * Mapillary's In-Place ABN WideResNet-38 ImageNet checkpoint, whose norm layers are single modules
    (``mod2.block1.bn1.weight``) where ours are ``Sequential(BN, ReLU)`` (``mod2.block1.bn1.0.weight``)
    -> remapped key by key (counted in the report's ``remapped``);
  * NVIDIA's partial-padding ImageNet ResNets (github.com/NVIDIA/partialconv, ``pdresnet50`` ...:
    ``{"state_dict": {"module.conv1.weight": ...}, "arch": ..., ...}``, torchvision keys under DataParallel's
    prefix) -> loaded into the encoder, the natural start for a partial-padding run;
  * a seg checkpoint (``{"model": state_dict, ...}`` with ``encoder.*``/``aspp.*``/``decoder.*`` keys)
    -> loaded into the whole model.
A shape mismatch is an error, except for the classifier (another dataset's class count), which is
skipped and reported. NVIDIA's code skipped every mismatch silently, so users lost mIoU without knowing.
"""
from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias, cast
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.models import WeightsEnum

from seg.errors import SegError

logger = logging.getLogger(__name__)

#: top-level submodules of :class:`seg.models.DeepLabV3Plus`; keys starting with one mean a full-model file
MODEL_PREFIXES = ("encoder.", "aspp.", "decoder.")
#: checkpoint wrappers looked into, in order
WRAPPER_KEYS = ("state_dict", "model")
#: prefix of a model.pretrained value naming torchvision weights
TORCHVISION_PREFIX = "torchvision:"
#: model.pretrained value naming the encoder's ImageNet weights
IMAGENET = "imagenet"
#: model.pretrained value naming a timm encoder's pretrained weights (timm's cache)
TIMM = "timm"
#: the ImageNet weights ``imagenet`` means per torchvision encoder (V1: the zero-padding models the paper starts from)
IMAGENET_WEIGHTS = {f"resnet{depth}": f"ResNet{depth}_Weights.IMAGENET1K_V1" for depth in (18, 34, 50, 101, 152)}
#: how to run when the weights cannot be had: every "no weights" error ends with it
WITHOUT_WEIGHTS = "or start from random weights with --opts model.pretrained=null"
HOW_TO_GET = ("for a torchvision ResNet use model.pretrained=imagenet (or ResNet50_Weights.IMAGENET1K_V1, ...), "
              "which torchvision's cache downloads once; for WRN-38, NVIDIA's ImageNet checkpoint from "
              f"github.com/NVIDIA/semantic-segmentation; {WITHOUT_WEIGHTS}")
#: what a Python caller may pass as ``weights=``: a spelling above, an enum member, a path, True (imagenet)
Weights: TypeAlias = "str | Path | WeightsEnum | bool | None"


class PretrainedLoadError(SegError, RuntimeError):
    """A checkpoint that cannot be loaded as asked (missing file, wrong content, shape mismatch)."""


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did. ``target`` is "encoder" or "model"."""

    path: str
    target: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    skipped_classifier: list[str] = field(default_factory=list)
    remapped: int = 0

    def summary(self) -> str:
        remapped = f" ({self.remapped} remapped from a single-norm-module layout)" if self.remapped else ""
        return (f"{self.path}: loaded {len(self.loaded)} tensors into the {self.target}{remapped}; "
                f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
                f"{len(self.skipped_classifier)} classifier tensors skipped (shape mismatch)")


def strip_wrapper_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DDP/DataParallel's "module." and torch.compile's "_orig_mod." key prefixes (each only when every
    key carries it), so a wrapped model's state dict loads into the bare model."""
    state = dict(state)
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of the checkpoint at ``path``, unwrapped (``state_dict``/``model``), wrapper prefixes stripped."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedLoadError(f"pretrained checkpoint {path} does not exist; {HOW_TO_GET}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated/corrupt/pickled-code files
        raise PretrainedLoadError(f"cannot read pretrained checkpoint {path}: {err}") from err
    for key in WRAPPER_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise PretrainedLoadError(f"{path} holds no state_dict (expected a dict of tensors, optionally "
                                  f"under one of {WRAPPER_KEYS}); got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise PretrainedLoadError(f"{path}: entries that are not tensors: {bad[:5]}")
    return strip_wrapper_prefix(obj)


NORM_LEAVES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def remap_single_norm(state: dict[str, torch.Tensor], own: Mapping[str, torch.Tensor]) -> tuple[dict, int]:
    """In-Place ABN layout -> ours: a key ``<prefix>.<leaf>`` the model lacks becomes ``<prefix>.0.<leaf>``
    where the model has that key (a norm inside ``Sequential(norm, ReLU)``). Returns (state, keys remapped)."""
    out, moved = {}, 0
    for key, value in state.items():
        prefix, _, leaf = key.rpartition(".")
        alt = f"{prefix}.0.{leaf}"
        if key not in own and leaf in NORM_LEAVES and alt in own and alt not in state:
            out[alt], moved = value, moved + 1
        else:
            out[key] = value
    return out, moved


def torchvision_weights(spec: str) -> tuple[str, Path]:
    """(download url, path in torchvision's cache) of ``"[torchvision:]<Enum>.<member>"``."""
    name = spec.removeprefix(TORCHVISION_PREFIX)
    enum_name, _, member = name.partition(".")
    enum = getattr(torchvision.models, enum_name, None)
    if enum is None or not enum_name.endswith("_Weights"):
        raise PretrainedLoadError(f"model.pretrained {spec!r}: torchvision has no weights enum {enum_name!r} "
                                  "(expected e.g. ResNet50_Weights.IMAGENET1K_V1)")
    try:
        weights = enum[member]
    except KeyError:
        raise PretrainedLoadError(f"model.pretrained {spec!r}: {enum_name} has no member {member!r}; "
                                  f"known: {[w.name for w in enum]}") from None
    return _cache_file(weights)


def _cache_file(weights: WeightsEnum) -> tuple[str, Path]:
    url = weights.url
    return url, Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _names_torchvision(spec: str) -> bool:
    """Whether ``spec`` is a torchvision weights name rather than a file: ``[torchvision:]<X>_Weights.<member>``
    and no such file exists."""
    enum_name = spec.removeprefix(TORCHVISION_PREFIX).partition(".")[0]
    return spec.startswith(TORCHVISION_PREFIX) or (enum_name.endswith("_Weights") and not os.path.exists(spec))


def canonical_weights(weights: Weights, encoder: str | None = None) -> str | Path | None:
    """``weights`` as one :func:`resolve_pretrained` reads: None/False -> None; True/``imagenet`` -> the
    encoder's ImageNet weights (``timm`` for a timm encoder); an enum member -> its name."""
    if weights is None or weights is False or weights == "":
        return None
    if isinstance(weights, WeightsEnum):
        return f"{TORCHVISION_PREFIX}{type(weights).__name__}.{weights.name}"
    if weights is True or weights == IMAGENET:
        if encoder in IMAGENET_WEIGHTS:
            return TORCHVISION_PREFIX + IMAGENET_WEIGHTS[encoder]
        if encoder is not None and encoder.startswith("timm/"):
            return TIMM
        raise PretrainedLoadError(f"model.pretrained {IMAGENET}: encoder {encoder!r} has no downloadable ImageNet "
                                  f"weights; give a local checkpoint: {HOW_TO_GET}")
    if isinstance(weights, (str, Path)):
        return weights
    raise PretrainedLoadError(f"model.pretrained / weights= {weights!r}: expected {IMAGENET!r}, {TIMM!r}, a "
                              f"torchvision weights enum or name, or a checkpoint file; got {type(weights).__name__}")


def resolve_pretrained(spec: str | Path) -> Path:
    """A local checkpoint path as is; torchvision weights (``[torchvision:]<Enum>.<member>``) as their file in
    torchvision's cache, downloaded there (by torch.hub, as torchvision itself does) when missing."""
    if not _names_torchvision(str(spec)):
        return Path(spec)
    url, path = torchvision_weights(str(spec))
    if not path.is_file():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path), progress=True)
        except Exception as err:  # no network, proxy, disk full: say where the file must go
            reason = " ".join(str(err).split())[:200]
            raise PretrainedLoadError(f"model.pretrained {spec}: {path.name} is not in torchvision's cache "
                                      f"{path.parent} and downloading {url} failed ({reason}); fetch that URL "
                                      "on a machine with internet and copy it into that folder (or set TORCH_HOME), "
                                      f"{WITHOUT_WEIGHTS}") from err
    return path


def timm_state_dict(encoder: nn.Module) -> tuple[str, dict[str, torch.Tensor]]:
    """(label, state dict) of the pretrained weights of a :class:`~seg.models.TimmEncoder`'s timm model, through
    timm's own cache (downloaded there when online). Offline and not cached: a one-line error naming the cache."""
    name = getattr(encoder, "timm_name", None)
    if name is None:
        raise PretrainedLoadError(f"model.pretrained {TIMM}: the encoder is not a timm/<name> encoder; use "
                                  f"{IMAGENET}, torchvision weights or a checkpoint file")
    timm = importlib.import_module("timm")
    hub = importlib.import_module("huggingface_hub.constants")
    try:
        body = timm.create_model(name, pretrained=True, features_only=True,
                                 output_stride=getattr(encoder, "output_stride", 32))
    except Exception as err:  # offline (several hub error types), no pretrained tag, corrupt file
        reason = " ".join(str(err).split())[:200]
        raise PretrainedLoadError(f"model.pretrained {TIMM}: timm could not load the pretrained weights of {name} "
                                  f"from its cache {hub.HF_HUB_CACHE} ({type(err).__name__}: {reason}); fetch "
                                  f"them once online (or set HF_HOME), give a local checkpoint, {WITHOUT_WEIGHTS}"
                                  ) from None
    return f"timm:{name}", body.state_dict()


def load_pretrained(model: nn.Module, path: Weights, classifier: str = "decoder.classifier.") -> LoadReport:
    """Load ``path`` (any spelling of the module docstring) into ``model`` (a DeepLabV3Plus) or into
    ``model.encoder``; returns the report.

    Raises :class:`PretrainedLoadError` on unreadable files, on any shape mismatch outside
    ``classifier`` (key prefix, full-model files only) and when no tensor at all matches. Missing and
    unexpected keys are logged one by one as warnings.
    """
    spec = canonical_weights(path, getattr(model, "encoder_name", None))
    if spec is None:
        raise PretrainedLoadError("load_pretrained: no weights given")
    if spec == TIMM:
        label, state = timm_state_dict(cast(nn.Module, model.encoder))
        return load_state(model, label, state, classifier)
    file = resolve_pretrained(spec)
    return load_state(model, str(file), read_state_dict(file), classifier)


def load_state(model: nn.Module, path: str, state: dict[str, torch.Tensor],
               classifier: str = "decoder.classifier.") -> LoadReport:
    """Load the tensors ``state`` (read from ``path``, named in messages) as :func:`load_pretrained` does."""
    full = any(k.startswith(MODEL_PREFIXES) for k in state)
    # seg's models keep their encoder as a submodule (torch types Module attributes as Tensor | Module)
    target = model if full else cast(nn.Module, model.encoder)
    prefix = "" if full else getattr(target, "state_dict_prefix", "")
    if prefix:  # a timm checkpoint holds the timm model's keys; the encoder keeps that model under a prefix
        state = {k if k.startswith(prefix) else prefix + k: v for k, v in state.items()}
    report = LoadReport(str(path), "model" if full else "encoder")
    own = target.state_dict()
    state, report.remapped = remap_single_norm(state, own)
    mismatched = []
    for key, value in list(state.items()):
        if key in own and own[key].shape != value.shape:
            if full and key.startswith(classifier):
                report.skipped_classifier.append(key)
                del state[key]
            else:
                mismatched.append(f"{key}: file {tuple(value.shape)} vs model {tuple(own[key].shape)}")
    if mismatched:
        raise PretrainedLoadError(f"{path}: shape mismatch in {len(mismatched)} tensors (only the classifier "
                                  "may differ):\n  " + "\n  ".join(mismatched))
    report.loaded = [k for k in state if k in own]
    if not report.loaded:
        raise PretrainedLoadError(f"{path}: none of its {len(state)} tensors matches the {report.target} "
                                  f"(file keys start like {sorted(state)[:3]}); wrong encoder or format?")
    result = target.load_state_dict(state, strict=False)
    report.missing = [k for k in result.missing_keys if k not in report.skipped_classifier]
    report.unexpected = list(result.unexpected_keys)
    _log(report)
    return report


def _log(report: LoadReport) -> None:
    logger.info(report.summary())
    for key in report.skipped_classifier:
        logger.warning("%s: classifier tensor %s skipped (shape differs; kept the fresh init)", report.path, key)
    for key in report.missing:
        logger.warning("%s: missing key %s (kept the fresh init)", report.path, key)
    for key in report.unexpected:
        logger.warning("%s: unexpected key %s (ignored)", report.path, key)
