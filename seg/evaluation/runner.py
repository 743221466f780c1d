"""Glue for the command-line tools: checkpoint -> model under a chosen padding, config -> eval options."""
from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterable, Mapping, Sequence

import torch

from seg.config import ConfigError, load_config, merge_overrides, validate
from seg.data import label_space
from seg.data.labels import LabelSpace
from seg.engine.checkpoint import load_checkpoint
from seg.errors import SegError
from seg.models import build_model
from seg.models.pretrained import strip_wrapper_prefix
from seg.nn import PADDING_MODES, convert_padding

from .evaluator import leave_out_keys
from .inference import InferenceSettings

__all__ = ["ArchitectureMismatch", "ARCH_KEYS", "model_config_for", "load_model_for_eval", "eval_settings",
           "run_config", "run_names", "labels_for", "format_table"]


class ArchitectureMismatch(SegError, RuntimeError):
    """The checkpoint's weights do not fit the model built from the config; the message names the file."""


ARCH_KEYS = ("encoder", "num_classes", "output_stride", "norm", "padding")  # what the weights were built as


def model_config_for(cfg_model: dict, trained: dict, explicit: Iterable[str], checkpoint: str) -> dict:
    """The model section to build for `checkpoint`: its own stored `trained` values of ARCH_KEYS (the truth
    for its weights), else the config's. A key in `explicit` (set on the command line) whose value differs
    from the checkpoint's is an ArchitectureMismatch naming both."""
    out = copy.deepcopy(cfg_model)
    for key in ARCH_KEYS:
        if key not in trained:
            continue
        if key in explicit and cfg_model[key] != trained[key]:
            hint = "; evaluate under another padding with --padding" if key == "padding" else ""
            raise ArchitectureMismatch(f"model.{key}={cfg_model[key]!r} on the command line conflicts with "
                                       f"checkpoint {checkpoint}, trained with model.{key}={trained[key]!r}{hint}")
        out[key] = trained[key]
    return out


def run_config(checkpoint: str, config: str | None = None, opts: Iterable[str] = (),
               loaded: dict | None = None) -> dict:
    """The config to evaluate ``checkpoint`` with: the YAML file ``config`` when given, else the config
    stored in the checkpoint; ``opts`` (``key=value``) overrides on top. ``loaded``: the checkpoint dict
    when the caller already read it. ConfigError naming the checkpoint when it stores no config."""
    opts = list(opts)
    if config is not None:
        return load_config(config, opts)
    ckpt = loaded if loaded is not None else load_checkpoint(checkpoint)
    stored = ckpt.get("config")
    if not isinstance(stored, dict) or not stored:
        raise ConfigError(f"{checkpoint}: the checkpoint stores no config; name one with --config")
    source = f"config stored in {checkpoint}" + (" + --opts" if opts else "")
    return validate(merge_overrides(stored, opts), source=source)


def labels_for(data_cfg: dict, num_classes: int, checkpoint: str) -> LabelSpace:
    """The label space of the config's data section, which must name the ``num_classes`` classes the
    checkpoint predicts (ConfigError naming the checkpoint otherwise)."""
    labels = label_space(data_cfg)
    if labels.num_classes != num_classes:
        raise ConfigError(f"{checkpoint}: the model predicts {num_classes} classes but the data section "
                          f"(data.format={data_cfg.get('format', 'cityscapes')!r}) names {labels.num_classes}")
    return labels


def run_names(checkpoints: Sequence[str]) -> list[str]:
    """A table label per checkpoint: the run folder holding it (the folder above ``checkpoints/``), with
    the file name added where two checkpoints share a run folder."""
    def run_of(path: str) -> str:
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.basename(folder) == "checkpoints":
            folder = os.path.dirname(folder)
        return os.path.basename(folder) or folder
    runs = [run_of(p) for p in checkpoints]
    return [f"{run}/{os.path.basename(p)}" if runs.count(run) > 1 else run for run, p in zip(runs, checkpoints)]


def load_model_for_eval(cfg: dict, checkpoint: str, padding_mode: str | None = None,
                        device: torch.device | str = "cpu", loaded: dict | None = None,
                        explicit: Iterable[str] = ()) -> tuple[torch.nn.Module, dict]:
    """Build DeepLabV3Plus as `checkpoint` was trained (its stored model section; `cfg`'s for what it does
    not store), load its weights strictly and switch every padded conv to ``padding_mode`` (default: the
    padding the weights were trained with).

    ``explicit``: model keys set on the command line; one that contradicts the checkpoint is an error.
    ``loaded``: the checkpoint dict if the caller already read ``checkpoint`` (avoids a second read).
    Returns (model in eval mode on ``device``, info {"checkpoint", "trained_padding", "eval_padding",
    "encoder", "output_stride", "norm", "num_classes"}). Raises CheckpointError (missing / corrupt file) or
    ArchitectureMismatch, naming the file.
    """
    ckpt = loaded if loaded is not None else load_checkpoint(checkpoint)
    trained_cfg = (ckpt.get("config") or {}).get("model", {})
    model_cfg = model_config_for(cfg["model"], trained_cfg, explicit, checkpoint)
    model_cfg["pretrained"] = None  # the checkpoint supplies every weight
    trained_padding = model_cfg.get("padding", "zeros")
    eval_padding = padding_mode or trained_padding
    if eval_padding not in PADDING_MODES:
        raise ConfigError(f"unknown padding mode {eval_padding!r}; expected one of {PADDING_MODES}")
    model = build_model(model_cfg)
    state = strip_wrapper_prefix(ckpt["model"])
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        trained = {k: trained_cfg.get(k) for k in ("encoder", "num_classes", "output_stride") if k in trained_cfg}
        raise ArchitectureMismatch(
            f"checkpoint {checkpoint} does not fit the model of the config (encoder={model_cfg.get('encoder')}, "
            f"num_classes={model_cfg.get('num_classes')}); checkpoint trained with {trained or 'unknown config'}: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(mismatched)} with another shape (e.g. {mismatched[:3]})")
    model.load_state_dict(state)
    convert_padding(model, eval_padding)
    model.to(device).eval()
    return model, {"checkpoint": os.path.abspath(checkpoint), "trained_padding": trained_padding,
                   "eval_padding": eval_padding, "train_seed": (ckpt.get("config") or {}).get("train", {}).get("seed"),
                   **{key: model_cfg.get(key) for key in ("encoder", "output_stride", "norm", "num_classes")}}


ANALYSIS_KEYS = ("leave_out", "leave_out_by", "distance_bands")


def eval_settings(eval_cfg: dict, **overrides) -> tuple[InferenceSettings, dict]:
    """The config's ``eval`` section, with ``overrides`` that are not None (command-line options), as
    (inference settings, the leave-out / distance-band keyword arguments of
    :class:`seg.evaluation.SegmentationEvaluator`)."""
    values = dict(eval_cfg)
    values.update({k: v for k, v in overrides.items() if v is not None})
    analysis = {key: values.pop(key) for key in ANALYSIS_KEYS if key in values}
    return InferenceSettings.from_config({}, **values), analysis


def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def format_table(result: Mapping) -> str:
    """Readable plain-text summary: per-class IoU, mIoU, pixel accuracy, leave-out and distance bands."""
    lines = [f"mode {result['settings']['mode']}  images {result['num_images']}  mIoU {_fmt(result['mIoU'])}  "
             f"mAcc {_fmt(result.get('mAcc'))}  fwIoU {_fmt(result.get('fwIoU'))}  "
             f"pixel acc {_fmt(result['pixel_acc'])}"]
    if "official" in result:
        lines.append(f"cityscapesscripts mIoU {_fmt(result['official']['mIoU'])}  (ours {_fmt(result['mIoU'])}, "
                     f"|diff| {abs(result['official']['mIoU'] - result['mIoU']):.2e})")
    width = max(len(n) for n in result["class_names"] + ["class"])
    accs = result.get("Acc") or [None] * len(result["IoU"])
    lines.append(f"  {'class':<{width}}  {'IoU':>6}  {'Acc':>6}")
    lines += [f"  {name:<{width}}  {_fmt(iou):>6}  {_fmt(acc):>6}"
              for name, iou, acc in zip(result["class_names"], result["IoU"], accs)]
    for lo in (result[key] for key in leave_out_keys(result)):
        lines.append(f"centre leave-out by {lo['by']}: {lo['meaning']}")
        lines += [f"  p={row['label']:<6} mIoU {_fmt(row['mIoU']):>6}  scored pixels {row['scored_pixels']}"
                  for row in lo["results"]]
    if "distance_bands" in result:
        lines.append(f"distance to the image border: {result['distance_bands']['meaning']}")
        lines += [f"  {row['label']:<8} px  mIoU {_fmt(row['mIoU']):>6}  pixels {row['pixels']}"
                  for row in result["distance_bands"]["results"]]
    t = result.get("timing")
    if t:
        lines.append(f"time {t['total_s']:.1f}s, network {t['network_s']:.1f}s, "
                     f"outside the network {100 * t['outside_share']:.1f}%")
    return "\n".join(lines)
