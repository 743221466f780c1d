"""The classifier's config schema, loaded with seg.config's own loader (``schema=CLS_SCHEMA``).

Same file format as segmentation configs: YAML with ``_base_`` inheritance, ``a.b=value`` overrides,
every key validated (unknown key, wrong type, value outside its choices or bounds -> ConfigError naming
the key and the file) and every default filled in.
"""
from __future__ import annotations

from seg.config import SCHEMA, ConfigError, dump_config, key_spec, load_config, optimizer_keys, runtime_keys, validate
from seg.config import default_config as _default_config
from seg.data.options import IMAGENET_MEAN, IMAGENET_STD
from seg.nn import PADDING_MODES

__all__ = ["CLS_SCHEMA", "CLASSIFIER_ARCHS", "ConfigError", "load_classifier_config", "is_classifier_config",
           "default_classifier_config", "validate_classifier_config", "dump_config"]

CLASSIFIER_ARCHS = ("tinynet", "resnet18", "resnet50", "resnet101", "resnet152", "vgg16_bn", "vgg19_bn")

# Defaults follow the PyTorch ImageNet example (the paper's protocol, section 4.1): SGD lr 0.1 for a
# batch of 256, momentum 0.9, weight decay 1e-4, lr x0.1 every 30 epochs; the paper trains 100 epochs.
CLS_SCHEMA: dict = {
    "model": {
        "arch": key_spec("resnet50", "str", CLASSIFIER_ARCHS),
        "num_classes": key_spec(1000, "int", min=1),
        "padding": key_spec("zeros", "str", PADDING_MODES, doc="padding mode; Python APIs call it padding_mode"),
        "pretrained": key_spec(None, "str?", doc="path to a state dict / checkpoint to start from; null = random init"),
    },
    "data": {
        "root": key_spec("datasets/imagenet", "str", doc="ImageFolder root holding <train_split>/ and <val_split>/"),
        "train_split": key_spec("train", "str"),
        "val_split": key_spec("val", "str"),
        "crop_size": key_spec(224, "int", min=1, doc="RandomResizedCrop size (train) and centre-crop size (val)"),
        "resize_size": key_spec(256, "int", min=1, doc="val: shorter side resized to this before the centre crop"),
        "scale_range": key_spec([0.08, 1.0], "list[float]", doc="RandomResizedCrop area fraction range"),
        "hflip": key_spec(0.5, "float"),
        "mean": key_spec(list(IMAGENET_MEAN), "list[float]"),
        "std": key_spec(list(IMAGENET_STD), "list[float]"),
        "num_workers": key_spec(8, "int", min=0, doc="loader workers per process"),
    },
    "train": {
        "epochs": key_spec(100, "int", min=1),
        **optimizer_keys(batch_size=256, lr=0.1),
        "lr_step_epochs": key_spec(30, "int", min=1, doc="lr is multiplied by lr_gamma every this many epochs"),
        "lr_gamma": key_spec(0.1, "float"),
        "warmup_epochs": key_spec(0, "int", min=0, doc="linear warm-up from warmup_factor * lr (per iteration)"),
        "warmup_factor": key_spec(0.1, "float"),
        "label_smoothing": key_spec(0.0, "float", min=0),
        **runtime_keys(sync_bn=False, sync_bn_doc="the PyTorch example keeps per-GPU BatchNorm"),
        "log_interval": key_spec(50, "int", min=1),
        "ckpt_interval": key_spec(0, "int", min=0,
                                  doc="extra mid-epoch checkpoints every N iterations; 0 = epoch ends only"),
        "keep_checkpoints": key_spec(2, "int", doc="periodic checkpoints kept on disk (best/final apart)"),
        "val_batch_size": key_spec(256, "int", min=1, doc="per process"),
    },
    "eval": {
        "topk": key_spec([1, 5], "list[int]", min=1),
        "last_k": key_spec(5, "int", min=1, doc="the 'last_k' protocol: mean accuracy over the last k epochs"),
    },
    "work_dir": SCHEMA["work_dir"],
}


def load_classifier_config(path: str | None, opts=()) -> dict:
    """Load a classification config (YAML with ``_base_``, then ``a.b=value`` overrides), validated against
    CLS_SCHEMA with every default filled in. Raises ConfigError naming the file and key."""
    return load_config(path, opts, schema=CLS_SCHEMA)


def is_classifier_config(path: str) -> bool:
    """Whether the file is a valid classification config (so that ``seg train`` can hand it on); a missing
    file or a segmentation config is not."""
    try:
        load_classifier_config(path)
    except ConfigError:
        return False
    return True


def default_classifier_config() -> dict:
    """All CLS_SCHEMA defaults as nested plain dicts."""
    return _default_config(schema=CLS_SCHEMA)


def validate_classifier_config(cfg: dict, source: str = "config") -> dict:
    """Check `cfg` against CLS_SCHEMA and fill defaults (ConfigError names the key and `source`)."""
    return validate(cfg, source, schema=CLS_SCHEMA)
