"""The validation that segmentation training runs (seg.segmentation.train's `validate`, every
``train.val_interval`` iterations): whole-image mIoU on the validation set, every rank scoring its shard.
Built here, above the engine, so that seg.engine needs nothing of seg.evaluation."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from seg.data import label_space
from seg.engine.loaders import build_eval_loader
from seg.engine.speed import prepare_model
from seg.evaluation.evaluator import SegmentationEvaluator, run_inference
from seg.evaluation.inference import InferenceSettings

__all__ = ["build_validator"]


def build_validator(val_set: Dataset, cfg: dict, device: torch.device) -> Callable[[nn.Module], dict]:
    """`validate(model) -> the scores of a regular-inference pass` (SegmentationEvaluator's entries, with
    "settings" and "timing") for `val_set` under `cfg` (the loss's ``train.ignore_index`` is the value left out
    of the scores; the network run as ``train.channels_last`` and ``train.compile`` say, seg.engine.speed)."""
    loader = build_eval_loader(val_set, batch_size=cfg["train"]["val_batch_size"],
                               num_workers=min(2, cfg["data"]["num_workers"]))
    labels = dataclasses.replace(label_space(cfg["data"]), ignore_index=cfg["train"]["ignore_index"])
    train = cfg["train"]
    bands = train["val_distance_bands"]  # the border bands the trackers log (train.val_distance_bands)

    def validate(model: nn.Module) -> dict:
        network = prepare_model(model, device, train["channels_last"], train["compile"])
        return run_inference(network, loader, InferenceSettings(), [SegmentationEvaluator(distance_bands=bands)],
                             device=device, labels=labels).metrics
    return validate
