"""ImageNet-style classification training on the engine's loop (seg.engine.loop): ``train.epochs`` epochs
with the epoch-step LR schedule (the PyTorch ImageNet example's), validated (top-k) after every epoch.

Files in `work_dir` (rank 0), besides the loop's (checkpoints at every epoch end, plus every
``ckpt_interval`` iterations; model_final.pth; metrics.jsonl; tb/): checkpoints/best.pth (model-only, at
the best val top-1) and summary.json (per-epoch records, best epoch, mean of the last k epochs).
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from seg.engine.distributed import DistInfo, all_reduce_mean
from seg.engine.hooks import KeepBest, Validation
from seg.engine.loaders import build_eval_loader
from seg.engine.loop import TrainLoop
from seg.engine.optim import StepEpochLR, restart_schedule
from seg.engine.step import amp_dtype

from .metrics import evaluate_classifier
from .summary import summarize_run, write_json

__all__ = ["build_step_scheduler", "EpochRecords", "BestTop1", "train_classifier"]


def build_step_scheduler(optimizer: torch.optim.Optimizer, train_cfg: dict, iters_per_epoch: int,
                         start: int = 0) -> StepEpochLR:
    """The classifier's schedule (``lr_step_epochs``, ``lr_gamma``, ``warmup_epochs``), positioned at
    iteration `start` with the live config's rates."""
    last = restart_schedule(optimizer, train_cfg["lr"], start)
    return StepEpochLR(optimizer, iters_per_epoch, train_cfg["lr_step_epochs"], train_cfg["lr_gamma"],
                       train_cfg["warmup_epochs"], train_cfg["warmup_factor"], last_epoch=last)


class EpochRecords(Validation):
    """Top-k validation after every epoch (a :class:`KeepBest` after it keeps the best top-1). The per-epoch
    records (the history) go into every checkpoint, so a resumed run's summary covers the epochs before the
    resume too."""

    def __init__(self, validate: Callable[[nn.Module], dict], cfg: dict):
        self.topk = [f"top{k}" for k in cfg["eval"]["topk"]]
        super().__init__(validate, per_epoch=True, shown=tuple(self.topk))
        self.cfg = cfg
        self.history: list[dict] = []  # one record per validated epoch
        self.losses: list[torch.Tensor] = []  # this epoch's step losses, averaged at its validation
        self.summary: dict = {}  # filled at the end of training

    def after_step(self, loop: TrainLoop) -> None:
        if loop.loss is not None:  # a skipped step has no loss to average
            self.losses.append(loop.loss)
        super().after_step(loop)

    def record(self, loop: TrainLoop, metrics: dict) -> dict:
        # a resumed epoch's train loss covers the steps since the resume only
        train_loss = all_reduce_mean(torch.stack(self.losses).mean()).item()
        self.losses = []
        self.history.append({"epoch": loop.epoch + 1, **{k: metrics[k] for k in self.topk},
                             "val_count": metrics["count"], "val_loss": metrics["loss"], "train_loss": train_loss,
                             "lr": loop.lr, "iteration": loop.iteration})
        return self.history[-1]

    def state_dict(self) -> dict:
        return {"history": self.history}

    def load_state_dict(self, checkpoint: dict) -> None:
        self.history = list(checkpoint.get("history", []))

    def after_train(self, loop: TrainLoop) -> None:
        self.summary = {"history": self.history,
                        **summarize_run(self.history, self.cfg["eval"]["last_k"], self.topk)}
        loop.meta.update(epochs=len(self.history), best=self.summary["best"], last_k=self.summary["last_k"])
        if loop.info.is_main:
            model_cfg = self.cfg["model"]
            write_json({"arch": model_cfg["arch"], "padding": model_cfg["padding"], "seed": self.cfg["train"]["seed"],
                        **self.summary}, os.path.join(loop.work_dir, "summary.json"))


class BestTop1(KeepBest):
    """checkpoints/best.pth at the best top-1; the history (EpochRecords) holds it for checkpoints, resume
    and the final model's meta."""

    def __init__(self):
        super().__init__("top1")

    def after_train(self, loop: TrainLoop) -> None:
        pass  # EpochRecords puts the best epoch's record in the meta

    def state_dict(self) -> dict:
        return {}  # the history holds it

    def load_state_dict(self, checkpoint: dict) -> None:
        self.best = max((r["top1"] for r in checkpoint.get("history", [])), default=-math.inf)


def train_classifier(cfg: dict, model: nn.Module, train_set: Dataset, val_set: Dataset, info: DistInfo,
                     work_dir: str, resume: str | None = None, overwrite: bool = False) -> tuple[nn.Module, dict]:
    """Train for ``cfg["train"]["epochs"]`` epochs, validating top-k after each; returns (model, summary).

    cfg: a classifier config (seg.classification.config). train_set / val_set yield (uint8 (3, H, W),
    int class) and carry a ``normalize`` (seg.classification.data.ClassificationFolder). resume: None,
    "auto" (newest usable checkpoint of the work dir's run) or a checkpoint path.
    The work dir is locked and owned as in seg.engine.train (seg.engine.workdir): a fresh run in a folder
    that holds one is refused unless `overwrite` moves it aside.
    summary: {"history": per-epoch records, **summarize_run(history)}; also written to summary.json.
    Raises NonFiniteLossError when the loss becomes NaN/inf.
    """
    train_cfg = cfg["train"]
    loader = build_eval_loader(val_set, batch_size=train_cfg["val_batch_size"],
                               num_workers=cfg["data"]["num_workers"])
    dtype = amp_dtype(train_cfg["amp"])
    records = EpochRecords(lambda net: evaluate_classifier(net, loader, info.device, cfg["eval"]["topk"], dtype), cfg)
    loop = TrainLoop(cfg, model, train_set, info, work_dir,
                     criterion=nn.CrossEntropyLoss(label_smoothing=train_cfg["label_smoothing"]),
                     schedule=build_step_scheduler, epochs=train_cfg["epochs"], hooks=(records, BestTop1()))
    return loop.fit(resume, overwrite), records.summary
