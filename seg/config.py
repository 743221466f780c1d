"""Experiment configuration: one schema with a default for every key, YAML files, ``--opts`` overrides.

A config file is YAML holding any subset of the schema's keys. It may name one or more parent files
with ``_base_`` (paths relative to the file); parents are merged first, in order, then the file itself
on top, then command-line overrides ``a.b=value`` (the value parsed as YAML, so ``train.lr=0.02`` is a
float and ``data.train_sets=[fine/train]`` a list). The result is validated against ``SCHEMA``:
an unknown key or a value of the wrong type raises :class:`ConfigError` naming the key and the file.

``load_config`` returns nested plain dicts (no custom classes), so a config can go straight into a
checkpoint that ``torch.load(weights_only=True)`` reads back.
"""
from __future__ import annotations

import copy
import difflib
import os
import re
from collections.abc import Callable, Iterable
from typing import Any

import yaml

from seg.atomic import atomic_open
from seg.data import COARSE_MODES, CROP_PLACEMENTS, CV_SPLITS, DATA_DEFAULTS, FORMATS, DataError, label_space
from seg.errors import ConfigError
from seg.models import NORMS, OUTPUT_STRIDES, encoder_name_error
from seg.models.pretrained import IMAGENET
from seg.nn import PADDING_MODES
from seg.resources import config_suggestion

__all__ = ["ConfigError", "COMPILE_MODES", "EVAL_MODES", "OPTIMIZERS", "LR_SCHEDULES", "PRETRAINED_BY_FORMAT", "SCHEMA",
           "key_spec", "data_key",
           "optimizer_keys",
           "runtime_keys", "did_you_mean", "default_config", "load_config", "merge_overrides", "override_keys",
           "validate", "check_label_space", "config_changes", "dump_config"]


def did_you_mean(name: str, known: Iterable[str], prefix: str = "") -> str:
    """" (did you mean '<prefix>.x'?)" for the known name x closest to a mistyped one, or "" when none is close."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {(prefix + '.' if prefix else '') + close[0]!r}?)" if close else ""


def key_spec(default: Any, kind: str, choices: Iterable | None = None, doc: str = "", *,
             min: float | None = None, max: float | None = None, check: Callable[[Any], str | None] | None = None
             ) -> dict:
    """One schema key: its default, `kind` (see SCHEMA), allowed `choices`, a `doc` line, inclusive bounds and
    `check`, for values no fixed list holds: it returns None for a good value, else what is wrong."""
    return {"default": default, "kind": kind, "choices": tuple(choices) if choices else None, "doc": doc, "min": min,
            "max": max, "check": check}


def data_key(name: str, kind: str, choices: Iterable | None = None, doc: str = "", **bounds) -> dict:
    """A data-section key whose default is seg.data's (DATA_DEFAULTS: the builders fill partial sections from it)."""
    return key_spec(DATA_DEFAULTS[name], kind, choices, doc, **bounds)


def _scale_range_error(value: list[float]) -> str | None:
    if len(value) == 2 and 0 < value[0] <= value[1]:
        return None
    return f"expected [low, high] with 0 < low <= high, got {value}"


#: train.optimizer choices (seg.engine.build_optimizer); both fused, so the step guard can skip an update
OPTIMIZERS = ("sgd", "adamw")
#: train.lr_schedule choices of segmentation (seg.engine.build_scheduler), both with the linear warm-up
LR_SCHEDULES = ("poly", "cosine")
#: train.trackers choices (seg.segmentation.trackers), each the name of its module and of its extra
TRACKERS = ("mlflow", "wandb")


def _known_trackers(names: list[str]) -> str | None:
    unknown = [n for n in names if n not in TRACKERS]
    return f"unknown tracker(s) {unknown}; choose from {list(TRACKERS)}" if unknown else None


def optimizer_keys(*, batch_size: int, lr: float) -> dict[str, dict]:
    """The train keys seg.engine.build_optimizer reads, with a schema's own batch and lr defaults."""
    return {
        "batch_size": key_spec(batch_size, "int", min=1,
                               doc="GLOBAL batch: split evenly over the world size (must divide it)"),
        "optimizer": key_spec("sgd", "str", OPTIMIZERS, doc="sgd (with momentum) or adamw (decoupled weight decay)"),
        "lr": key_spec(lr, "float", min=0),
        "momentum": key_spec(0.9, "float", doc="sgd only"),
        "nesterov": key_spec(False, "bool", doc="sgd only"),
        "betas": key_spec([0.9, 0.999], "list[float]", doc="adamw only: its two moment decay rates"),
        "weight_decay": key_spec(1e-4, "float", min=0),
        "no_wd_norm_bias": key_spec(False, "bool", doc="exclude biases and norm parameters from weight decay"),
    }


# train.compile: off, torch.compile's inductor modes, or "eager" (dynamo's graph capture without code generation)
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "eager")


def runtime_keys(*, sync_bn: bool, sync_bn_doc: str) -> dict[str, dict]:
    """The train keys for precision, device and reproducibility that every seg.engine trainer reads."""
    return {
        "amp": key_spec("none", "str", ("none", "bf16", "fp16")),
        "sync_bn": key_spec(sync_bn, "bool", doc=sync_bn_doc),
        "device": key_spec("auto", "str", ("auto", "cpu", "cuda")),
        "seed": key_spec(0, "int"),
        "deterministic": key_spec(False, "bool"),
        "channels_last": key_spec(None, "bool?",
                                  doc="channels_last memory format in training, validation, evaluation and "
                                      "prediction; null (auto) = on for CUDA (H200, DeepLabV3+ bf16 training: "
                                      "+13-22% img/s for both paddings), off on the CPU"),
        "compile": key_spec("off", "str", COMPILE_MODES,
                            doc="torch.compile the network (training, validation, evaluation, prediction): off, an "
                                "inductor mode (default, reduce-overhead, max-autotune) or eager (graph capture "
                                "only); off by default until measured on the GPU"),
        "dist_timeout_min": key_spec(10.0, "float", min=0.01,
                                     doc="minutes a collective waits for a hung or dead rank before the run fails"),
    }


# Inference modes of seg.evaluation (tools/eval.py --mode): whole image, tiles, overlapping tiles.
EVAL_MODES = ("regular", "tile", "overlap")
# Readings of a centre leave-out proportion p (eval.leave_out_by): blank a centred p*H x p*W rectangle ("side"),
# one covering a fraction p of the image ("area"), or score both from the same pass ("both").
LEAVE_OUT_BY = ("side", "area", "both")

#: model.pretrained of a config that leaves it out, by data.format: a folder data set (ADE20K, VOC, one's own)
#: starts from the encoder's ImageNet weights, as mmseg and smp do; Cityscapes configs name their own weights
#: (the paper's), and a config without them starts from random weights
PRETRAINED_BY_FORMAT: dict[str, str | None] = {"cityscapes": None, "folder": IMAGENET}

# Every key the toolkit understands. `kind` is a small type language: str, int, float, bool, list[T] (T may be
# a list kind too), dict[K,V] of scalars, and a trailing "?" for "may be null". Floats accept ints (YAML
# writes `1` for 1.0).
SCHEMA: dict[str, dict[str, dict]] = {
    "model": {
        "encoder": key_spec("resnet50", "str", check=encoder_name_error,
                            doc="encoder name: one of the builder's own list, or timm/<timm model name>"),
        "num_classes": key_spec(19, "int", min=1),
        "output_stride": key_spec(8, "int", OUTPUT_STRIDES),
        "padding": key_spec("zeros", "str", PADDING_MODES, doc="padding mode; Python APIs call it padding_mode"),
        "pretrained": key_spec(None, "str?", doc="imagenet (the encoder's ImageNet weights), a torchvision weights "
                              "name such as ResNet50_Weights.IMAGENET1K_V1 (torchvision's cache), timm (a timm "
                              "encoder's weights, timm's cache), a checkpoint file, or null (random init); left out: "
                              "imagenet for data.format=folder, null for cityscapes"),
        "norm": key_spec("bn", "str", NORMS, doc="normalisation layer of the network"),
    },
    "data": {
        "format": data_key("format", "str", FORMATS,
                           doc="cityscapes: the official layout (train_sets are 'annotation/split'); folder: "
                               "images and masks matched by relative path (train_sets / val_split are split names)"),
        "root": data_key("root", "str"),
        "train_sets": data_key("train_sets", "list[str]",
                               doc='cityscapes: "annotation/split" entries, e.g. coarse/train_extra; folder: splits'),
        "val_split": data_key("val_split", "str?", doc="split used for periodic validation; null disables it"),
        "cv_split": data_key("cv_split", "int", CV_SPLITS,
                             doc="cityscapes city split: 0 = official train/val; k = 1, 2 validate on the 3 cities "
                                 "from index 21k//3 of (sorted val + sorted train cities) and train on the other 18"),
        "img_dir": data_key("img_dir", "str", doc="folder: image folder under root; {split} = the split name"),
        "ann_dir": data_key("ann_dir", "str", doc="folder: mask folder under root; {split} = the split name"),
        "split_list": data_key("split_list", "str?",
                               doc="folder: file under root listing a split's names (relative path minus suffix), "
                                   "one a line, e.g. ImageSets/Segmentation/{split}.txt; null = every image of "
                                   "img_dir, each matched to its mask"),
        "img_suffix": data_key("img_suffix", "str", doc="folder: image file ending, dot included"),
        "mask_suffix": data_key("mask_suffix", "str", doc="folder: mask file ending (8-bit greyscale or palette PNG)"),
        "class_names": data_key("class_names", "list[str]?",
                                doc="folder: one name per class (required; as many as model.num_classes); "
                                    "cityscapes names its own"),
        "palette": data_key("palette", "list[list[int]]?",
                            doc="folder: [r, g, b] per class for visualisations; null = distinct generated colours"),
        "ignore_index": data_key("ignore_index", "int", min=0, max=255,
                                 doc="folder: mask value (after reduce_zero_label / label_map) of unlabelled pixels"),
        "reduce_zero_label": data_key("reduce_zero_label", "bool",
                                      doc="folder: mask value 0 is unlabelled and value k is class k-1 (ADE20K)"),
        "label_map": data_key("label_map", "dict[int,int]?",
                              doc="folder: mask value -> class index (or ignore_index), applied after "
                                  "reduce_zero_label; unlisted values keep their meaning"),
        "crop_size": data_key("crop_size", "int", min=1),
        "scale_range": data_key("scale_range", "list[float]", check=_scale_range_error,
                                doc="[low, high] random rescale factors of a training crop, 0 < low <= high"),
        "hflip": data_key("hflip", "float", min=0, max=1, doc="probability of a horizontal flip"),
        "blur_prob": data_key("blur_prob", "float", min=0, max=1),
        "color_jitter": data_key("color_jitter", "float", min=0, max=1),
        "hue_jitter": data_key("hue_jitter", "float?", min=0, max=0.5,
                               doc="hue shift bound (fraction of the hue circle); null = color_jitter / 10"),
        "mean": data_key("mean", "list[float]"),
        "std": data_key("std", "list[float]"),
        "class_balance": data_key("class_balance", "float", min=0, max=1,
                                  doc="fraction of crops centred on a pixel of a chosen class"),
        "centroids_per_class": data_key("centroids_per_class", "int"),
        "coarse_mode": data_key("coarse_mode", "str", COARSE_MODES,
                                doc="union: an epoch = one crop per fine and coarse image; boost: an epoch = the fine "
                                    "images, coarse only in class-centred crops of coarse_boost_classes (NVIDIA)"),
        "coarse_boost_classes": data_key("coarse_boost_classes", "list[int]",
                                         doc="trainIds coarse images serve in coarse_mode=boost (NVIDIA's default)"),
        "crop_placement": data_key("crop_placement", "str", CROP_PLACEMENTS,
                                   doc="class-balanced crops: centred on the sampled pixel, or the pixel anywhere "
                                       "inside the crop (uniform, clipped to the image; NVIDIA's class-uniform crops)"),
        "num_workers": data_key("num_workers", "int", min=0),
    },
    "train": {
        "iterations": key_spec(31000, "int", min=1),
        **optimizer_keys(batch_size=8, lr=0.01),
        "ema_decay": key_spec(None, "float?", min=0, max=1,
                              doc="EMA of the weights, e.g. 0.999, scored at every validation (ema_mIoU) and "
                                  "saved as model_ema.pth; null = none"),
        "lr_schedule": key_spec("poly", "str", LR_SCHEDULES,
                                doc="poly: (1 - it / iterations) ** poly_power; cosine: half a cosine to 0"),
        "poly_power": key_spec(0.9, "float"),
        "warmup_iters": key_spec(0, "int", min=0),
        "warmup_factor": key_spec(0.1, "float", doc="LR multiplier at iteration 0 of the linear warm-up"),
        "class_weights": key_spec(None, "list[float]?"),
        "ignore_index": key_spec(255, "int"),
        **runtime_keys(sync_bn=True, sync_bn_doc="SyncBatchNorm when running on GPU with world size > 1"),
        "log_interval": key_spec(20, "int", min=1),
        "ckpt_interval": key_spec(1000, "int", min=1),
        "keep_checkpoints": key_spec(2, "int", doc="periodic checkpoints kept on disk (best/last/export apart)"),
        "val_interval": key_spec(0, "int", min=0, doc="0 = validate only at the end"),
        "val_batch_size": key_spec(1, "int", min=1),
        "val_distance_bands": key_spec([], "list[int]", doc="border-distance band edges (px) whose mIoU each "
                                       "validation logs to TensorBoard (val/band_mIoU/<band>); [] = none"),
        "val_panels": key_spec(2, "int", min=0, doc="validation images drawn as TensorBoard panels (image, "
                                                    "truth, prediction) at each validation"),
        "trackers": key_spec([], "list[str]", check=_known_trackers,
                             doc="experiment trackers logging params, validations and the run's files: mlflow "
                                 "(file store in <work_dir>/mlruns), wandb (offline, in <work_dir>/wandb)"),
    },
    "eval": {
        "mode": key_spec("regular", "str", EVAL_MODES),
        "tile_size": key_spec(1024, "int", min=1),
        "overlap": key_spec(0.333, "float", min=0, max=0.99),
        "scales": key_spec([1.0], "list[float]"),
        "flip": key_spec(False, "bool"),
        "tile_batch": key_spec(4, "int", min=1),
        "leave_out": key_spec([0.0, 1 / 3, 1 / 2, 2 / 3, 3 / 4, 7 / 8], "list[float]"),
        "leave_out_by": key_spec("side", "str", LEAVE_OUT_BY),
        "distance_bands": key_spec([0, 16, 32, 64, 128], "list[int]"),
    },
    "work_dir": key_spec(None, "str?", doc="output folder; null = work_dirs/<config file name>"),
}


def _is_key_spec(node: dict) -> bool:
    return "kind" in node and "default" in node


def default_config(*, schema: dict | None = None) -> dict:
    """All defaults of `schema` (default: SCHEMA), as nested plain dicts."""
    def walk(node):
        if _is_key_spec(node):
            return copy.deepcopy(node["default"])
        return {name: walk(child) for name, child in node.items()}
    return walk(SCHEMA if schema is None else schema)


_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class _WrongKind(Exception):
    """Raised inside the kind check and turned into a ConfigError naming the key by :func:`validate`."""


def _check_scalar(value: Any, kind: str) -> Any:
    """Return `value` coerced to `kind`, or raise _WrongKind."""
    if kind == "str" and isinstance(value, str):
        return value
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind == "float" and isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
        return float(value)  # PyYAML (YAML 1.1) reads 1e-4 as a string; it means a float
    raise _WrongKind


def _check_value(value: Any, kind: str) -> Any:
    if kind.endswith("?"):
        if value is None:
            return None
        kind = kind[:-1]
    if kind.startswith("list[") and kind.endswith("]"):
        if not isinstance(value, (list, tuple)):
            raise _WrongKind
        return [_check_value(v, kind[5:-1]) for v in value]
    if kind.startswith("dict[") and kind.endswith("]"):
        if not isinstance(value, dict):
            raise _WrongKind
        key_kind, value_kind = kind[5:-1].split(",")
        return {_check_scalar(k, key_kind): _check_scalar(v, value_kind) for k, v in value.items()}
    return _check_scalar(value, kind)


def _check_bounds(value: Any, spec: dict, where: str) -> None:
    """ConfigError unless every number of `value` lies within the spec's min/max (None = unbounded)."""
    values = value if isinstance(value, list) else [] if value is None else [value]
    low, high = spec.get("min"), spec.get("max")
    if low is not None and values and min(values) < low:
        raise ConfigError(f"{where} must be >= {low}, got {value!r}")
    if high is not None and values and max(values) > high:
        raise ConfigError(f"{where} must be <= {high}, got {value!r}")


def validate(cfg: dict, source: str = "config", *, schema: dict | None = None) -> dict:
    """Check `cfg` against `schema` (default: SCHEMA) and fill defaults; returns a new dict.

    Raises ConfigError naming the dotted key and `source` for an unknown key, a wrong type or a value
    outside its choices. A segmentation config that leaves model.pretrained out gets its data format's
    (PRETRAINED_BY_FORMAT).
    """
    def walk(node: dict, values: Any, prefix: str) -> Any:
        if _is_key_spec(node):
            try:
                value = _check_value(values, node["kind"])
            except _WrongKind:
                raise ConfigError(f"{source}: key '{prefix}' expects {node['kind']}, "
                                  f"got {type(values).__name__} {values!r}") from None
            if node["choices"] and value not in node["choices"]:
                raise ConfigError(f"{source}: key '{prefix}' must be one of {list(node['choices'])}, got {value!r}")
            problem = node.get("check") and node["check"](value)
            if problem:
                raise ConfigError(f"{source}: key '{prefix}': {problem}")
            _check_bounds(value, node, f"{source}: key '{prefix}'")
            return value
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: key '{prefix}' is a section and expects a mapping, got {values!r}")
        unknown = sorted(set(values) - set(node))
        if unknown:
            where = f"'{prefix}.{unknown[0]}'" if prefix else f"'{unknown[0]}'"
            raise ConfigError(f"{source}: unknown key {where}{did_you_mean(unknown[0], node, prefix)} "
                              f"(known here: {', '.join(sorted(node))})")
        out = {}
        for name, child in node.items():
            path = f"{prefix}.{name}" if prefix else name
            if name in values:
                out[name] = walk(child, values[name], path)
            else:
                out[name] = walk(child, child["default"], path) if _is_key_spec(child) else walk(child, {}, path)
        return out
    out = walk(SCHEMA if schema is None else schema, cfg, "")
    if schema is None and "pretrained" not in (cfg.get("model") or {}):
        out["model"]["pretrained"] = PRETRAINED_BY_FORMAT[out["data"]["format"]]
    return out


def _deep_merge(base: dict, top: dict, spec: dict | None) -> dict:
    """`top` over `base`: sections merge key by key; a value (a dict-valued key such as data.label_map too)
    is replaced whole, as an override replaces it."""
    out = dict(base)
    for name, value in top.items():
        child = spec.get(name) if isinstance(spec, dict) else None
        if isinstance(value, dict) and isinstance(out.get(name), dict) and not (child and _is_key_spec(child)):
            out[name] = _deep_merge(out[name], value, child)
        else:
            out[name] = value
    return out


def _read_yaml(path: str, chain: tuple[str, ...] = (), *, schema: dict | None = None) -> dict:
    """Read one YAML file and its `_base_` parents, merged (parents first). ``chain``: the files that
    include this one, outermost first."""
    path = os.path.abspath(path)
    if path in chain:
        raise ConfigError(f"{path}: circular _base_ chain: {' -> '.join(chain + (path,))}")
    if not os.path.isfile(path):
        raise ConfigError(f"{chain[-1]}: _base_ file not found: {path}" if chain
                          else f"config file not found: {path}{config_suggestion(path)}")
    with open(path) as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if data is None:  # an empty (or all-comment) file is a mistake, not a request for the defaults
        raise ConfigError(f"{path}: config file is empty (write `{{}}` for a file that sets nothing)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    bases = data.pop("_base_", [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: '_base_' must be a path or a list of paths, got {bases!r}")
    merged: dict = {}
    spec = SCHEMA if schema is None else schema
    for base in bases:
        parent = _read_yaml(os.path.join(os.path.dirname(path), base), chain + (path,), schema=schema)
        merged = _deep_merge(merged, parent, spec)
    # Validate each file on its own so that an error names the file that holds the bad key.
    merged = _deep_merge(merged, data, spec)
    validate(merged, source=path, schema=schema)  # validate returns a new dict; ``merged`` stays unfilled
    return merged


def merge_overrides(cfg: dict, opts: Iterable[str], *, schema: dict | None = None) -> dict:
    """Apply ``a.b=value`` overrides (value parsed with yaml.safe_load); returns a new dict."""
    cfg = copy.deepcopy(cfg)
    for item in opts:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--opts: bad override {item!r}: expected key=value, e.g. train.lr=0.01")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"--opts: cannot parse value of {key!r} ({raw!r}) as YAML: {e}") from None
        node, spec = cfg, SCHEMA if schema is None else schema
        parts = key.split(".")
        for depth, part in enumerate(parts):
            section = isinstance(spec, dict) and not _is_key_spec(spec)
            if not section or part not in spec:
                hint = did_you_mean(part, spec, ".".join(parts[:depth])) if section else ""
                raise ConfigError(f"--opts: unknown key {'.'.join(parts[:depth + 1])!r} in {item!r}{hint}")
            spec = spec[part]
            if depth < len(parts) - 1:
                node = node.setdefault(part, {})
        if not _is_key_spec(spec):
            raise ConfigError(f"--opts: {key!r} is a section; override one of its keys ({', '.join(spec)})")
        node[parts[-1]] = value
    return cfg


def override_keys(opts: Iterable[str], section: str) -> set[str]:
    """Keys of `section` that ``a.b=value`` overrides set, e.g. {"output_stride"} for model.output_stride=16."""
    keys = (item.partition("=")[0].strip() for item in opts)
    return {key[len(section) + 1:] for key in keys if key.startswith(section + ".")}


def load_config(path: str | None, opts: Iterable[str] = (), *, schema: dict | None = None) -> dict:
    """Load `path` (YAML, with `_base_` inheritance), apply `opts` overrides, validate against `schema`
    (default: SCHEMA, the segmentation schema), fill defaults.

    `path` may be None for the pure defaults. Returns nested plain dicts; raises ConfigError.
    """
    cfg = _read_yaml(path, schema=schema) if path is not None else {}
    cfg = merge_overrides(cfg, opts, schema=schema)
    source = f"{path or 'defaults'} + --opts" if opts else (path or "defaults")
    cfg = validate(cfg, source=source, schema=schema)
    if schema is None:
        check_label_space(cfg, source)
    return cfg


def check_label_space(cfg: dict, source: str = "config") -> None:
    """ConfigError unless the data section describes a consistent label space whose class count is
    model.num_classes (checked on the merged config: a dataset file and a model file are often apart)."""
    try:
        space = label_space(cfg["data"])
    except DataError as e:
        raise ConfigError(f"{source}: {e}") from None
    if cfg["data"]["class_names"] is not None and space.num_classes != cfg["model"]["num_classes"]:
        raise ConfigError(f"{source}: data.class_names lists {space.num_classes} classes but model.num_classes is "
                          f"{cfg['model']['num_classes']}")


def config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """"key: old -> new" for every dotted key whose value differs between two configs (keys of `new`)."""
    out = []
    for name, value in new.items():
        key, before = f"{prefix}{name}", old.get(name) if isinstance(old, dict) else None
        if isinstance(value, dict):
            out += config_changes(before if isinstance(before, dict) else {}, value, f"{key}.")
        elif before != value:
            out.append(f"{key}: {before!r} -> {value!r}")
    return out


def dump_config(cfg: dict, path: str) -> None:
    """Write the resolved config as YAML (atomic), so a run can be repeated from its work dir."""
    with atomic_open(path) as f:
        yaml.safe_dump(cfg, f, sort_keys=False, default_flow_style=None)
