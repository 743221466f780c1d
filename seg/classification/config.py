"""The classifier's config schema, loaded with seg.config's own loader (``schema=CLS_SCHEMA``).

Same file format as segmentation configs: YAML with ``_base_`` inheritance, ``a.b=value`` overrides,
every key validated (unknown key, wrong type, value outside its choices or bounds -> ConfigError naming
the key and the file) and every default filled in.
"""
from __future__ import annotations

from seg.config import ConfigError, _key, dump_config, load_config, validate
from seg.config import default_config as _default_config
from seg.nn import PADDING_MODES

__all__ = ["CLS_SCHEMA", "CLASSIFIER_ARCHS", "ConfigError", "load_classifier_config", "default_classifier_config",
           "validate_classifier_config", "dump_config"]

CLASSIFIER_ARCHS = ("tinynet", "resnet18", "resnet50", "resnet101", "resnet152", "vgg16_bn", "vgg19_bn")

# Defaults follow the PyTorch ImageNet example (the paper's protocol, section 4.1): SGD lr 0.1 for a
# batch of 256, momentum 0.9, weight decay 1e-4, lr x0.1 every 30 epochs; the paper trains 100 epochs.
CLS_SCHEMA: dict = {
    "model": {
        "arch": _key("resnet50", "str", CLASSIFIER_ARCHS),
        "num_classes": _key(1000, "int", min=1),
        "padding": _key("zeros", "str", PADDING_MODES),
        "pretrained": _key(None, "str?", doc="path to a state dict / checkpoint to start from; null = random init"),
    },
    "data": {
        "root": _key("datasets/imagenet", "str", doc="ImageFolder root holding <train_split>/ and <val_split>/"),
        "train_split": _key("train", "str"),
        "val_split": _key("val", "str"),
        "crop_size": _key(224, "int", min=1, doc="RandomResizedCrop size (train) and centre-crop size (val)"),
        "resize_size": _key(256, "int", min=1, doc="val: shorter side resized to this before the centre crop"),
        "scale_range": _key([0.08, 1.0], "list[float]", doc="RandomResizedCrop area fraction range"),
        "hflip": _key(0.5, "float"),
        "mean": _key([0.485, 0.456, 0.406], "list[float]"),
        "std": _key([0.229, 0.224, 0.225], "list[float]"),
        "num_workers": _key(8, "int", min=0, doc="loader workers per process"),
    },
    "train": {
        "epochs": _key(100, "int", min=1),
        "batch_size": _key(256, "int", min=1, doc="GLOBAL batch: split evenly over the world size (must divide it)"),
        "lr": _key(0.1, "float", min=0),
        "momentum": _key(0.9, "float"),
        "nesterov": _key(False, "bool"),
        "weight_decay": _key(1e-4, "float", min=0),
        "no_wd_norm_bias": _key(False, "bool", doc="exclude biases and norm parameters from weight decay"),
        "lr_step_epochs": _key(30, "int", min=1, doc="lr is multiplied by lr_gamma every this many epochs"),
        "lr_gamma": _key(0.1, "float"),
        "warmup_epochs": _key(0, "int", min=0, doc="linear warm-up from warmup_factor * lr (per iteration)"),
        "warmup_factor": _key(0.1, "float"),
        "label_smoothing": _key(0.0, "float", min=0),
        "amp": _key("none", "str", ("none", "bf16", "fp16")),
        "sync_bn": _key(False, "bool", doc="the PyTorch example keeps per-GPU BatchNorm"),
        "device": _key("auto", "str", ("auto", "cpu", "cuda")),
        "seed": _key(0, "int"),
        "deterministic": _key(False, "bool"),
        "log_interval": _key(50, "int", min=1),
        "ckpt_interval": _key(0, "int", min=0, doc="extra mid-epoch checkpoints every N iterations; 0 = epoch ends only"),
        "keep_checkpoints": _key(2, "int", doc="periodic checkpoints kept on disk (best/final apart)"),
        "val_batch_size": _key(256, "int", min=1, doc="per process"),
    },
    "eval": {
        "topk": _key([1, 5], "list[int]", min=1),
        "last_k": _key(5, "int", min=1, doc="the 'last_k' protocol: mean accuracy over the last k epochs"),
    },
    "work_dir": _key(None, "str?", doc="output folder; null = work_dirs/<config file name>"),
}


def load_classifier_config(path: str | None, opts=()) -> dict:
    """Load a classification config (YAML with ``_base_``, then ``a.b=value`` overrides), validated against
    CLS_SCHEMA with every default filled in. Raises ConfigError naming the file and key."""
    return load_config(path, opts, schema=CLS_SCHEMA)


def default_classifier_config() -> dict:
    """All CLS_SCHEMA defaults as nested plain dicts."""
    return _default_config(schema=CLS_SCHEMA)


def validate_classifier_config(cfg: dict, source: str = "config") -> dict:
    """Check `cfg` against CLS_SCHEMA and fill defaults (ConfigError names the key and `source`)."""
    return validate(cfg, source, schema=CLS_SCHEMA)
