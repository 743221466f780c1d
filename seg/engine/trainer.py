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

from .checkpoint import (FULL_KEYS, checkpoint_path, export_model, find_resume_checkpoint, get_rng_state,
                         load_checkpoint, prune_checkpoints, save_checkpoint, set_rng_state)
from .distributed import DistInfo, all_reduce_mean, barrier, broadcast_buffers, convert_sync_bn
from .logger import RunLogger
from .optim import PolyLR, build_criterion, build_optimizer
from .sampler import EpochSeededDataset, ResumableDistributedSampler

__all__ = ["NonFiniteLossError", "seed_everything", "set_determinism", "amp_dtype", "train_step", "train"]

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


def _train_loader(dataset: Dataset, cfg: dict, info: DistInfo) -> tuple[DataLoader, ResumableDistributedSampler, int]:
    batch, world = cfg["train"]["batch_size"], info.world_size
    if batch % world:
        raise ValueError(f"train.batch_size={batch} (global) must be divisible by the world size {world}")
    per_rank = batch // world
    sampler = ResumableDistributedSampler(len(dataset), world, info.rank, seed=cfg["train"]["seed"])
    iters_per_epoch = sampler.per_rank // per_rank
    if iters_per_epoch == 0:
        raise ValueError(f"training set has {len(dataset)} samples, fewer than train.batch_size={batch}")
    workers = cfg["data"]["num_workers"]
    loader = DataLoader(dataset, batch_size=per_rank, sampler=sampler, num_workers=workers, drop_last=True,
                        pin_memory=info.device.type == "cuda", persistent_workers=False,
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


def _gather_rng_states(info: DistInfo) -> list[dict]:
    """Every rank's RNG state (rank order), so a resumed DDP run continues each rank's own stream."""
    state = get_rng_state()
    if not info.distributed:
        return [state]
    states = [None] * info.world_size
    torch.distributed.all_gather_object(states, state)
    return states


def train(cfg: dict, model: nn.Module, train_set: Dataset, info: DistInfo, work_dir: str,
          val_set: Dataset | None = None, resume: str | None = None) -> nn.Module:
    """Train `model` for ``cfg["train"]["iterations"]`` iterations; returns the trained (unwrapped) model.

    resume: None (fresh run), "auto" (newest loadable periodic checkpoint in `work_dir`, if any) or a
    checkpoint path. Files written in `work_dir` (rank 0): checkpoints/iter_*.pth, checkpoints/best.pth,
    model_final.pth, metrics.jsonl, tb/. Raises NonFiniteLossError when the loss is NaN/inf.
    """
    tcfg = cfg["train"]
    device = info.device
    model = convert_sync_bn(model, tcfg["sync_bn"], info).to(device)
    optimizer = build_optimizer(model, tcfg)
    scheduler = PolyLR(optimizer, tcfg["iterations"], tcfg["poly_power"], tcfg["warmup_iters"], tcfg["warmup_factor"])
    scaler = torch.amp.GradScaler(device.type, enabled=tcfg["amp"] == "fp16")
    criterion = build_criterion(tcfg, device)
    dtype = amp_dtype(tcfg["amp"])
    if dtype is torch.float16 and device.type == "cpu":
        warnings.warn("train.amp=fp16 on CPU is slow and rarely useful; bf16 is the CPU choice", stacklevel=2)

    start_iter, best_miou, last_ckpt = 0, -math.inf, None
    if resume is not None:
        found = find_resume_checkpoint(work_dir) if resume == "auto" else (resume, load_checkpoint(resume, FULL_KEYS))
        if found is None:
            _print(info, f"--resume auto: no checkpoint in {work_dir}/checkpoints, starting from iteration 0")
        else:
            last_ckpt, ckpt = found
            if ckpt["config"].get("model") != cfg["model"]:
                warnings.warn(f"resuming from {last_ckpt}, whose model section {ckpt['config'].get('model')} differs "
                              f"from this config's {cfg['model']}", stacklevel=2)
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            scaler.load_state_dict(ckpt["scaler"])
            start_iter, best_miou = ckpt["iteration"], ckpt.get("best_miou", -math.inf)
            rng = ckpt["rng"]
            set_rng_state(rng[info.rank] if len(rng) == info.world_size else rng[0])
            _print(info, f"resumed from {last_ckpt} at iteration {start_iter}")

    raw_model = model
    if info.distributed:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    model.train()

    seeded = EpochSeededDataset(train_set, seed=tcfg["seed"])
    loader, sampler, iters_per_epoch = _train_loader(seeded, cfg, info)
    per_rank = tcfg["batch_size"] // info.world_size
    log = RunLogger(work_dir, tcfg["iterations"], start_iter, enabled=info.is_main)

    def save(iteration: int, path: str) -> None:
        state = {"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "iteration": iteration,
                 "rng": _gather_rng_states(info), "config": cfg, "best_miou": best_miou}
        if info.is_main:
            save_checkpoint(state, path)

    def check_loss(loss: torch.Tensor) -> None:
        if not torch.isfinite(all_reduce_mean(loss)).item():
            raise NonFiniteLossError(
                f"loss is {loss.item()} at iteration {it + 1}; stopping. Last good checkpoint: "
                f"{last_ckpt or 'none written yet'} (resume with --resume auto, maybe with a lower train.lr)")

    it = start_iter
    epoch, offset = divmod(start_iter, iters_per_epoch)
    window_loss, window_steps, t0 = 0.0, 0, time.perf_counter()
    try:
        while it < tcfg["iterations"]:
            seeded.set_epoch(epoch)
            sampler.set_epoch(epoch, start=offset * per_rank)
            for images, targets in loader:
                images = images.to(device, non_blocking=True)
                targets = targets.to(device, non_blocking=True)
                loss = train_step(model, images, targets, criterion, optimizer, scaler, dtype, check_loss)
                scheduler.step()
                it += 1
                window_loss += loss.item()
                window_steps += 1
                if it % tcfg["log_interval"] == 0 or it == tcfg["iterations"]:
                    elapsed = time.perf_counter() - t0
                    scalars = {"loss": window_loss / window_steps, "lr": optimizer.param_groups[0]["lr"],
                               "img_s": window_steps * tcfg["batch_size"] / elapsed, "epoch": epoch}
                    log.log(it, scalars)
                    log.progress(window_steps, {"loss": f"{scalars['loss']:.4f}", "lr": f"{scalars['lr']:.2e}",
                                                "img/s": f"{scalars['img_s']:.1f}"})
                    window_loss, window_steps, t0 = 0.0, 0, time.perf_counter()
                periodic_val = tcfg["val_interval"] > 0 and it % tcfg["val_interval"] == 0
                if val_set is not None and (periodic_val or it == tcfg["iterations"]):
                    metrics = _validate(raw_model, val_set, cfg, device)  # mIoU is all-reduced over ranks
                    miou = metrics["mIoU"]
                    log.log(it, {k: v for k, v in metrics.items() if isinstance(v, (int, float))}, tag="val")
                    log.message(f"iter {it}: val mIoU {miou:.2f} (best before: {best_miou:.2f})")
                    if miou > best_miou:
                        best_miou = miou
                        save(it, os.path.join(work_dir, "checkpoints", "best.pth"))
                if it % tcfg["ckpt_interval"] == 0 or it == tcfg["iterations"]:
                    last_ckpt = checkpoint_path(work_dir, it)
                    save(it, last_ckpt)
                    if info.is_main:
                        prune_checkpoints(work_dir, tcfg["keep_checkpoints"])
                if it >= tcfg["iterations"]:
                    break
            epoch, offset = epoch + 1, 0
    finally:
        log.close()

    broadcast_buffers(raw_model)
    if info.is_main:
        export_model(raw_model.state_dict(), cfg, os.path.join(work_dir, "model_final.pth"),
                     meta={"iteration": it, "best_miou": best_miou if math.isfinite(best_miou) else None})
    barrier()
    return raw_model


def _print(info: DistInfo, text: str) -> None:
    if info.is_main:
        print(text, flush=True)
