"""Iteration-based training loop: DDP, AMP, poly LR, periodic validation, checkpoints, resume.

Batch split: ``train.batch_size`` is the GLOBAL batch. Each of the W ranks loads
``batch_size // W`` images per iteration (W must divide it) from its own disjoint share of the epoch's
permutation; DDP averages the gradients, so one optimizer step sees the whole global batch and the
learning rate does not depend on W. Without SyncBN (e.g. on CPU) BatchNorm statistics are per rank,
over ``batch_size // W`` images.
"""
from __future__ import annotations

import math
import os
import random
import time
import warnings
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from seg.config import ConfigError

from .checkpoint import (checkpoint_path, export_model, load_resume_checkpoint, prune_checkpoints,
                         restore_training_state, save_training_state)
from .distributed import DistInfo, all_reduce_mean, barrier, broadcast_buffers, convert_sync_bn, describe
from .logger import RunLogger
from .optim import build_criterion, build_optimizer, build_scheduler
from .sampler import EpochSeededDataset, ResumableDistributedSampler

__all__ = ["NonFiniteLossError", "Trainer", "seed_everything", "set_determinism", "amp_dtype", "train_step",
           "check_finite_loss", "build_train_loader", "train"]

_AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf; raised before the bad step touches the weights."""


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def set_determinism(deterministic: bool) -> None:
    """Deterministic kernels (bit-reproducible runs) or cuDNN autotuning (speed)."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # warn_only: a few CUDA backward kernels (bilinear upsampling) have no deterministic version.
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def amp_dtype(name: str) -> torch.dtype | None:
    return _AMP_DTYPES[name]


def train_step(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, criterion: nn.Module,
               optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, dtype: torch.dtype | None,
               check_loss: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor:
    """One forward/backward/step on a (B, 3, H, W) batch with (B, H, W) int64 targets; returns the loss.

    `check_loss` sees the detached loss before backward and may raise to abort the step (NaN guard).
    """
    with torch.autocast(images.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        logits = model(images)
    loss = criterion(logits.float(), targets)
    if check_loss is not None:
        check_loss(loss.detach())
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def check_finite_loss(loss: torch.Tensor, step: int, last_ckpt: str | None, where: str = "") -> None:
    """Raise NonFiniteLossError when the scalar `loss` of iteration `step` is NaN/inf on any rank.

    Collective under DDP (the loss is all-reduced, so every rank stops together). The message names the
    iteration (plus `where`, e.g. " (epoch 3)") and the last good checkpoint to resume from.
    """
    if not torch.isfinite(all_reduce_mean(loss)).item():
        raise NonFiniteLossError(
            f"loss is {loss.item()} at iteration {step}{where}; stopping. Last good checkpoint: "
            f"{last_ckpt or 'none written yet'} (resume with --resume auto, maybe with a lower train.lr)")


def build_train_loader(dataset: Dataset, cfg: dict, info: DistInfo
                       ) -> tuple[DataLoader, ResumableDistributedSampler, int]:
    """(loader, sampler, iterations per epoch) over this rank's share of `dataset`.

    ``cfg["train"]["batch_size"]`` is the global batch: each of the W ranks loads batch_size // W items a
    step (ConfigError unless W divides it, or when the set is smaller than one global batch).
    """
    batch, world = cfg["train"]["batch_size"], info.world_size
    if batch % world:
        raise ConfigError(f"train.batch_size={batch} (global) must be divisible by the world size {world}")
    per_rank = batch // world
    sampler = ResumableDistributedSampler(len(dataset), world, info.rank, seed=cfg["train"]["seed"])
    iters_per_epoch = sampler.per_rank // per_rank
    if iters_per_epoch == 0:
        raise ConfigError(f"training set has {len(dataset)} samples, fewer than train.batch_size={batch} "
                          f"(global; each of the {world} process(es) needs {per_rank} per step)")
    workers = cfg["data"]["num_workers"]
    loader = DataLoader(dataset, batch_size=per_rank, sampler=sampler, num_workers=workers, drop_last=True,
                        pin_memory=info.device.type == "cuda", persistent_workers=workers > 0,
                        # own generator: creating an iterator must not consume the global torch RNG,
                        # or a resumed run's dropout masks would drift from the uninterrupted run's.
                        generator=torch.Generator().manual_seed(cfg["train"]["seed"]))
    return loader, sampler, iters_per_epoch


def _validate(model: nn.Module, val_set: Dataset, cfg: dict, device: torch.device) -> dict:
    """Regular-mode mIoU on `val_set` via seg.evaluation.evaluate; every rank scores its own shard."""
    from seg.evaluation import evaluate
    from seg.evaluation.evaluator import build_eval_loader
    loader = build_eval_loader(val_set, batch_size=cfg["train"]["val_batch_size"],
                               num_workers=min(2, cfg["data"]["num_workers"]))
    return evaluate(model, loader, num_classes=cfg["model"]["num_classes"], device=device, mode="regular",
                    ignore_index=cfg["train"]["ignore_index"])


class Trainer:
    """Holds one run's model, optimizer, scheduler, scaler and loader; `run()` trains to the end.

    Files written in `work_dir` (rank 0): checkpoints/iter_*.pth (newest `keep_checkpoints` kept),
    checkpoints/best.pth (best validation mIoU), model_final.pth, metrics.jsonl, tb/.
    """

    def __init__(self, cfg: dict, model: nn.Module, train_set: Dataset, info: DistInfo, work_dir: str,
                 val_set: Dataset | None = None):
        self.cfg, self.tcfg, self.info, self.work_dir, self.val_set = cfg, cfg["train"], info, work_dir, val_set
        tcfg, device = self.tcfg, info.device
        self.model = convert_sync_bn(model, tcfg["sync_bn"], info).to(device)
        _print(info, f"distributed: {describe(info, self.model)}")
        self.optimizer = build_optimizer(self.model, tcfg)
        self.scaler = torch.amp.GradScaler(device.type, enabled=tcfg["amp"] == "fp16")
        self.criterion = build_criterion(tcfg, device)
        self.dtype = amp_dtype(tcfg["amp"])
        if self.dtype is torch.float16 and device.type == "cpu":
            warnings.warn("train.amp=fp16 on CPU is slow and rarely useful; bf16 is the CPU choice", stacklevel=3)
        self.train_set = EpochSeededDataset(train_set, seed=tcfg["seed"])
        # uint8 batches are normalised here, on the device (see seg.data.BatchNormalize)
        self.normalize = getattr(train_set, "normalize", None) or (lambda images: images)
        self.loader, self.sampler, self.iters_per_epoch = build_train_loader(self.train_set, cfg, info)
        self.scheduler = build_scheduler(self.optimizer, tcfg, self.iters_per_epoch)
        self.iteration, self.best_miou, self.last_ckpt = 0, -math.inf, None

    def resume(self, spec: str) -> None:
        """spec "auto": newest loadable periodic checkpoint in the work dir (if any); else a checkpoint path."""
        found = load_resume_checkpoint(spec, self.work_dir)
        if found is None:
            _print(self.info, f"--resume auto: no checkpoint in {self.work_dir}/checkpoints, starting from scratch")
            return
        path, ckpt = found
        if ckpt["config"].get("model") != self.cfg["model"]:
            warnings.warn(f"resuming from {path}, whose model section {ckpt['config'].get('model')} differs "
                          f"from this config's {self.cfg['model']}", stacklevel=2)
        self.iteration = restore_training_state(ckpt, self.model, self.optimizer, self.scheduler, self.scaler,
                                                self.info)
        self.best_miou, self.last_ckpt = ckpt.get("best_miou", -math.inf), path
        _print(self.info, f"resumed from {path} at iteration {self.iteration}")

    def save(self, path: str) -> None:
        """Full checkpoint (collective: every rank contributes its RNG state; rank 0 writes)."""
        save_training_state(path, self.model, self.optimizer, self.scheduler, self.scaler, self.iteration, self.cfg,
                            self.info, best_miou=self.best_miou)

    def check_loss(self, loss: torch.Tensor) -> None:
        """Stop on a NaN/inf loss on any rank, before the step can spoil the weights."""
        check_finite_loss(loss, self.iteration + 1, self.last_ckpt)

    def batches(self):
        """(images, targets) on the device from the current iteration on, across epochs, forever."""
        per_rank = self.tcfg["batch_size"] // self.info.world_size
        epoch, offset = divmod(self.iteration, self.iters_per_epoch)
        while True:
            self.sampler.set_epoch(epoch, start=offset * per_rank)  # the epoch travels with each index
            for images, targets in self.loader:
                yield epoch, self.normalize(images.to(self.info.device, non_blocking=True)), \
                    targets.to(self.info.device, non_blocking=True)
            epoch, offset = epoch + 1, 0

    def validate(self, log: RunLogger) -> None:
        """Regular-mode mIoU (all-reduced over ranks); saves best.pth when it improves."""
        metrics = _validate(self.model, self.val_set, self.cfg, self.info.device)
        log.log(self.iteration, {k: v for k, v in metrics.items() if isinstance(v, (int, float))}, tag="val")
        log.message(f"iter {self.iteration}: val mIoU {metrics['mIoU']:.2f} (best before: {self.best_miou:.2f})")
        if metrics["mIoU"] > self.best_miou:
            self.best_miou = metrics["mIoU"]
            self.save(os.path.join(self.work_dir, "checkpoints", "best.pth"))

    def run(self) -> nn.Module:
        """Train from the current iteration to the last; returns the trained (unwrapped) model."""
        tcfg, info, total = self.tcfg, self.info, self.tcfg["iterations"]
        ddp = DistributedDataParallel(self.model, device_ids=[info.device.index] if info.device.type == "cuda"
                                      else None) if info.distributed else self.model
        ddp.train()
        log = RunLogger(self.work_dir, total, self.iteration, enabled=info.is_main)
        window_loss, window_steps, t0 = 0.0, 0, time.perf_counter()
        batches = self.batches()
        try:
            while self.iteration < total:
                epoch, images, targets = next(batches)
                loss = train_step(ddp, images, targets, self.criterion, self.optimizer, self.scaler, self.dtype,
                                  self.check_loss)
                self.scheduler.step()
                self.iteration += 1
                it = self.iteration
                window_loss, window_steps = window_loss + loss.item(), window_steps + 1
                if it % tcfg["log_interval"] == 0 or it == total:
                    elapsed = time.perf_counter() - t0
                    scalars = {"loss": window_loss / window_steps, "lr": self.optimizer.param_groups[0]["lr"],
                               "img_s": window_steps * tcfg["batch_size"] / elapsed, "epoch": epoch}
                    log.log(it, scalars)
                    log.progress(window_steps, {"loss": f"{scalars['loss']:.4f}", "lr": f"{scalars['lr']:.2e}",
                                                "img/s": f"{scalars['img_s']:.1f}"})
                    window_loss, window_steps, t0 = 0.0, 0, time.perf_counter()
                # validate before the periodic checkpoint, so that the checkpoint carries the new best mIoU
                periodic_val = tcfg["val_interval"] > 0 and it % tcfg["val_interval"] == 0
                if self.val_set is not None and (periodic_val or it == total):
                    self.validate(log)
                if it % tcfg["ckpt_interval"] == 0 or it == total:
                    self.last_ckpt = checkpoint_path(self.work_dir, it)
                    self.save(self.last_ckpt)
                    if info.is_main:
                        prune_checkpoints(self.work_dir, tcfg["keep_checkpoints"])
        finally:
            batches.close()
            log.close()
        self.export()
        return self.model

    def export(self) -> None:
        """model_final.pth (model-only) with every rank's BN statistics made equal to rank 0's first."""
        broadcast_buffers(self.model)
        if self.info.is_main:
            best = self.best_miou if math.isfinite(self.best_miou) else None
            export_model(self.model.state_dict(), self.cfg, os.path.join(self.work_dir, "model_final.pth"),
                         meta={"iteration": self.iteration, "best_miou": best})
        barrier()


def train(cfg: dict, model: nn.Module, train_set: Dataset, info: DistInfo, work_dir: str,
          val_set: Dataset | None = None, resume: str | None = None) -> nn.Module:
    """Train `model` for ``cfg["train"]["iterations"]`` iterations; returns the trained (unwrapped) model.

    resume: None (fresh run), "auto" (newest loadable periodic checkpoint in `work_dir`, if any) or a
    checkpoint path. Raises NonFiniteLossError when the loss becomes NaN/inf (see :class:`Trainer`).
    """
    trainer = Trainer(cfg, model, train_set, info, work_dir, val_set)
    if resume is not None:
        trainer.resume(resume)
    return trainer.run()


def _print(info: DistInfo, text: str) -> None:
    if info.is_main:
        print(text, flush=True)
