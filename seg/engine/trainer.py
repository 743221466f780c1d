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

from seg.config import ConfigError, config_changes, dump_config
from seg.data.io import DataError
from seg.data.verify import check_pairs
from seg.errors import SegError

from .checkpoint import (checkpoint_path, export_model, load_resume_checkpoint, nonfinite_entries, prune_checkpoints,
                         restore_training_state, save_training_state)
from .distributed import DistInfo, all_reduce_mean, barrier, broadcast_buffers, convert_sync_bn, describe
from .logger import RunLogger
from .optim import build_criterion, build_optimizer, build_scheduler
from .sampler import EpochSeededDataset, ResumableDistributedSampler
from .workdir import adopt_run, claim_on_all_ranks, new_run_id, write_run_id

__all__ = ["NonFiniteLossError", "Trainer", "seed_everything", "set_determinism", "amp_dtype", "train_step",
           "check_finite_loss", "check_finite_state", "any_labelled", "build_train_loader", "train"]

_AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
VERIFY_SAMPLE = 16  # files per data set whose label values are checked before iteration 1 (all with verify)


class NonFiniteLossError(SegError, FloatingPointError):
    """The training loss, a parameter or a BatchNorm buffer became NaN or inf (divergence); the message names
    the last checkpoint verified finite. A checkpoint holding a non-finite value is never written."""


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
        raise NonFiniteLossError(f"loss is {loss.item()} at iteration {step}{where}; stopping. "
                                 f"{_last_good(last_ckpt)}")


def _last_good(last_ckpt: str | None) -> str:
    return (f"Last good checkpoint (verified finite): {last_ckpt or 'none written yet'}; resume with "
            "--resume auto, maybe with a lower train.lr (a changed schedule takes effect on resume)")


def check_finite_state(model: nn.Module, step: int, last_ckpt: str | None) -> None:
    """Raise NonFiniteLossError when a parameter or buffer (BatchNorm statistics) of `model` holds a NaN/inf
    on any rank after iteration `step`. Collective under DDP."""
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    finite = torch.stack([torch.isfinite(t).all() for t in tensors]).all().float()
    if all_reduce_mean(finite).item() < 1:
        bad = nonfinite_entries(model.state_dict()) or ["(on another rank)"]
        raise NonFiniteLossError(f"the model diverged: {len(bad)} parameter/buffer tensor(s) hold NaN/inf after "
                                 f"iteration {step}, e.g. {bad[:3]}; stopping without saving them. "
                                 f"{_last_good(last_ckpt)}")


def any_labelled(targets: torch.Tensor, num_classes: int, ignore_index: int, where: str) -> bool:
    """Whether any rank's `targets` hold a labelled (not `ignore_index`) pixel; DataError, on every rank, when a
    value is neither a class of ``model.num_classes`` nor the ignore index. Collective under DDP."""
    labelled = targets != ignore_index
    values = torch.where(labelled, targets, 0)
    bad = ((values < 0) | (values >= num_classes)).any()
    stats = all_reduce_mean(torch.stack([labelled.sum().float(), bad.float()]))
    if stats[1].item() > 0:
        seen = torch.unique(values[(values < 0) | (values >= num_classes)])[:5].tolist()
        raise DataError(f"{where}: label values {seen or '(on another rank)'} are outside 0..{num_classes - 1} "
                        f"of model.num_classes={num_classes} and are not train.ignore_index={ignore_index}; set "
                        "model.num_classes to the dataset's number of classes")
    return stats[0].item() > 0


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
        if hasattr(train_set, "crop_sources"):
            fine, coarse = train_set.crop_sources()
            _print(info, f"training crops per epoch: {fine} from fine, {coarse} from coarse images "
                         f"(data.coarse_mode={train_set.coarse_mode})")
        self.scheduler = build_scheduler(self.optimizer, tcfg, self.iters_per_epoch)
        self.iteration, self.best_miou, self.last_ckpt = 0, -math.inf, None
        self.run_id, self.skipped, self.verify = None, 0, False
        if tcfg["batch_size"] // info.world_size < 2 and _has_per_rank_batchnorm(self.model):
            raise ConfigError(f"train.batch_size={tcfg['batch_size']} gives {tcfg['batch_size'] // info.world_size} "
                              "image per process; BatchNorm needs at least 2 (its image-pooling statistics are "
                              "undefined for one image): raise train.batch_size, or use SyncBatchNorm on GPUs")

    def resume(self, spec: str) -> None:
        """spec "auto": newest usable periodic checkpoint of this work dir's run (if any); else a checkpoint path.

        The LR schedule is rebuilt from the live config at the resumed iteration, so changed schedule keys
        (train.lr, train.iterations, warm-up, poly power) take effect from there; every changed key is listed.
        """
        found = load_resume_checkpoint(spec, self.work_dir, self.run_id if spec == "auto" else None)
        if found is None:
            _print(self.info, f"--resume auto: no checkpoint in {self.work_dir}/checkpoints, starting from scratch")
            return
        path, ckpt = found
        self.run_id = adopt_run(self.work_dir, self.run_id, path, ckpt.get("run_id"))
        if ckpt["config"].get("model") != self.cfg["model"]:
            warnings.warn(f"resuming from {path}, whose model section {ckpt['config'].get('model')} differs "
                          f"from this config's {self.cfg['model']}", stacklevel=2)
        self.iteration = restore_training_state(ckpt, self.model, self.optimizer, self.scaler, self.info)
        if self.iteration > self.tcfg["iterations"]:
            raise ConfigError(f"train.iterations={self.tcfg['iterations']} is below the iteration {self.iteration} "
                              f"of {path}; resume with train.iterations >= {self.iteration}")
        self.scheduler = build_scheduler(self.optimizer, self.tcfg, self.iters_per_epoch, start=self.iteration)
        self.best_miou, self.last_ckpt = ckpt.get("best_miou", -math.inf), path
        _print(self.info, f"resumed from {path} at iteration {self.iteration}")
        changed = config_changes(ckpt["config"].get("train", {}), self.tcfg, "train.")
        if changed:
            _print(self.info, f"resume: {'; '.join(changed)} (changed since the checkpoint) take effect from "
                              f"iteration {self.iteration}: LR schedule rebuilt there, lr now "
                              f"{self.optimizer.param_groups[0]['lr']:.4g}")

    def save(self, path: str) -> None:
        """Full checkpoint (collective: every rank contributes its RNG state; rank 0 writes), written only
        when every parameter and buffer is finite."""
        check_finite_state(self.model, self.iteration, self.last_ckpt)
        save_training_state(path, self.model, self.optimizer, self.scheduler, self.scaler, self.iteration, self.cfg,
                            self.info, best_miou=self.best_miou, run_id=self.run_id)

    def check_data(self) -> None:
        """Fail in seconds, before iteration 1, on data that would fail later: the label values of a sample of
        each set (of every file with `verify`), then one validation image through the model."""
        sample = None if self.verify else VERIFY_SAMPLE
        for ds in (self.train_set.dataset, self.val_set):
            if hasattr(ds, "pairs"):
                check_pairs(ds.pairs, sample)
        if self.val_set is None:
            return
        image, target = self.val_set[0]
        self.model.eval()
        with torch.no_grad(), torch.autocast(self.info.device.type, dtype=self.dtype or torch.float32,
                                             enabled=self.dtype is not None):
            self.model(image[None].to(self.info.device))
        self.model.train()
        labels = getattr(self.val_set, "label_paths", None)
        any_labelled(target, self.cfg["model"]["num_classes"], self.tcfg["ignore_index"],
                       labels[0] if labels else "validation sample 0")

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
        window_loss, window_steps, window_losses, t0 = 0.0, 0, 0, time.perf_counter()
        batches = self.batches()
        try:
            while self.iteration < total:
                epoch, images, targets = next(batches)
                lr = self.optimizer.param_groups[0]["lr"]  # the rate this step uses (the scheduler steps after it)
                if self.has_labels(targets, log):
                    loss = train_step(ddp, images, targets, self.criterion, self.optimizer, self.scaler,
                                      self.dtype, self.check_loss)
                    window_loss, window_losses = window_loss + loss.item(), window_losses + 1
                self.scheduler.step()
                self.iteration += 1
                it = self.iteration
                window_steps += 1
                if it % tcfg["log_interval"] == 0 or it == total:
                    check_finite_state(self.model, it, self.last_ckpt)
                    elapsed = time.perf_counter() - t0
                    scalars = {"loss": window_loss / window_losses if window_losses else None, "lr": lr,
                               "img_s": window_steps * tcfg["batch_size"] / elapsed, "epoch": epoch,
                               **({"skipped_batches": self.skipped} if self.skipped else {})}
                    log.log(it, scalars)
                    log.progress(window_steps, {"loss": f"{scalars['loss'] or float('nan'):.4f}",
                                                "lr": f"{scalars['lr']:.2e}", "img/s": f"{scalars['img_s']:.1f}"})
                    window_loss, window_steps, window_losses, t0 = 0.0, 0, 0, time.perf_counter()
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
        if self.skipped:
            _print(info, f"warning: {self.skipped} batch(es) without a labelled pixel were skipped")
        self.export()
        return self.model

    def has_labels(self, targets: torch.Tensor, log: RunLogger) -> bool:
        """False (with a counted warning) for a batch whose every pixel, on every rank, is ignore: its loss
        would be 0/0 = NaN. The step is skipped; the iteration still counts, so the data order and the LR
        schedule stay those of an uninterrupted run."""
        where = f"training batch of iteration {self.iteration + 1}"
        if any_labelled(targets, self.cfg["model"]["num_classes"], self.tcfg["ignore_index"], where):
            return True
        self.skipped += 1
        log.message(f"warning: every pixel of the {where} is train.ignore_index={self.tcfg['ignore_index']}; "
                    f"step skipped ({self.skipped} so far)")
        return False

    def export(self) -> None:
        """model_final.pth (model-only) with every rank's BN statistics made equal to rank 0's first."""
        broadcast_buffers(self.model)
        check_finite_state(self.model, self.iteration, self.last_ckpt)
        if self.info.is_main:
            best = self.best_miou if math.isfinite(self.best_miou) else None
            export_model(self.model.state_dict(), self.cfg, os.path.join(self.work_dir, "model_final.pth"),
                         meta={"iteration": self.iteration, "best_miou": best, "skipped_batches": self.skipped,
                               "run_id": self.run_id})
        barrier()


def train(cfg: dict, model: nn.Module, train_set: Dataset, info: DistInfo, work_dir: str,
          val_set: Dataset | None = None, resume: str | None = None, overwrite: bool = False,
          verify: bool = False) -> nn.Module:
    """Train `model` for ``cfg["train"]["iterations"]`` iterations; returns the trained (unwrapped) model.

    resume: None (fresh run), "auto" (newest usable periodic checkpoint of the work dir's run, if any) or
    a checkpoint path. The work dir is locked for the run; a fresh run in a folder that holds one is
    refused (WorkDirError) unless `overwrite` moves it aside (see seg.engine.workdir). `verify`: check every
    data file's label values before iteration 1, not a sample. Raises NonFiniteLossError on divergence.
    """
    trainer = Trainer(cfg, model, train_set, info, work_dir, val_set)
    trainer.verify = verify
    lock = None
    try:
        lock, trainer.run_id = claim_on_all_ranks(work_dir, resume, overwrite, info)
        if resume is not None:
            trainer.resume(resume)
        trainer.check_data()  # before anything is written: a data error leaves the work dir as it was
        trainer.run_id = trainer.run_id or new_run_id()
        if info.is_main:
            write_run_id(work_dir, trainer.run_id)
            dump_config(cfg, os.path.join(work_dir, "config.yaml"))
        return trainer.run()
    finally:
        if lock is not None:
            lock.release()


def _has_per_rank_batchnorm(model: nn.Module) -> bool:
    """BatchNorm whose batch statistics come from this process's images alone (SyncBatchNorm pools ranks)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, nn.SyncBatchNorm)
               for m in model.modules())


def _print(info: DistInfo, text: str) -> None:
    if info.is_main:
        print(text, flush=True)
