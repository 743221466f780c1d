"""Epoch loop for ImageNet-style classification, built from seg.engine's pieces.

The segmentation loop (seg.engine.train) is iteration-based with mIoU validation; classification needs
a validation pass and a checkpoint at the end of every epoch and an epoch step schedule. Everything else
is the engine's: process group and device (init_distributed), SyncBN choice, SGD (build_optimizer), the
AMP/GradScaler step with its NaN guard hook (train_step), resumable per-rank sampling and per-item
seeding (ResumableDistributedSampler via the engine's loader, EpochSeededDataset), atomic weights_only
checkpoints with --resume auto (save/find/prune), RNG capture per rank, and the rank-0 RunLogger.

Files in `work_dir` (rank 0): checkpoints/iter_*.pth (full state at each epoch end, plus every
``ckpt_interval`` iterations; newest ``keep_checkpoints`` kept), checkpoints/best.pth (full state at the
best val top-1), model_final.pth ({"model", "config", "meta"}), metrics.jsonl, tb/, summary.json.
"""
from __future__ import annotations

import math
import os
import time
import warnings

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from seg.config import dump_config
from seg.engine.checkpoint import (checkpoint_path, export_model, load_resume_checkpoint, prune_checkpoints,
                                   restore_training_state, save_training_state)
from seg.engine.distributed import DistInfo, all_reduce_mean, barrier, broadcast_buffers, convert_sync_bn
from seg.engine.logger import RunLogger
from seg.engine.optim import build_optimizer, build_scheduler
from seg.engine.sampler import EpochSeededDataset
from seg.engine.workdir import adopt_run, claim_on_all_ranks, new_run_id, write_run_id
from seg.engine.trainer import amp_dtype, build_train_loader, check_finite_loss, train_step
from seg.evaluation import build_eval_loader

from .metrics import evaluate_classifier
from .summary import summarize_run, write_json

__all__ = ["train_classifier"]


def train_classifier(cfg: dict, model: nn.Module, train_set: Dataset, val_set: Dataset, info: DistInfo,
                     work_dir: str, resume: str | None = None, overwrite: bool = False) -> tuple[nn.Module, dict]:
    """Train for ``cfg["train"]["epochs"]`` epochs, validating top-k after each; returns (model, summary).

    cfg: a classifier config (seg.classification.config). train_set / val_set yield (float (3, H, W),
    int class). resume: None, "auto" (newest usable checkpoint of the work dir's run) or a checkpoint path.
    The work dir is locked and owned as in seg.engine.train (seg.engine.workdir): a fresh run in a folder
    that holds one is refused unless `overwrite` moves it aside.
    summary: {"history": per-epoch records, **summarize_run(history)}; also written to summary.json.
    Raises NonFiniteLossError when the loss becomes NaN/inf.
    """
    lock, run_id = claim_on_all_ranks(work_dir, resume, overwrite, info)
    try:
        return _train(cfg, model, train_set, val_set, info, work_dir, resume, run_id)
    finally:
        if lock is not None:
            lock.release()


def _train(cfg: dict, model: nn.Module, train_set: Dataset, val_set: Dataset, info: DistInfo, work_dir: str,
           resume: str | None, run_id: str | None) -> tuple[nn.Module, dict]:
    """train_classifier in a claimed work dir whose run is `run_id` (None: not settled yet)."""
    tcfg, topk = cfg["train"], cfg["eval"]["topk"]
    device = info.device
    model = convert_sync_bn(model, tcfg["sync_bn"], info).to(device)
    optimizer = build_optimizer(model, tcfg)
    seeded = EpochSeededDataset(train_set, seed=tcfg["seed"])
    loader, sampler, iters_per_epoch = build_train_loader(seeded, cfg, info)
    scheduler = build_scheduler(optimizer, tcfg, iters_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=tcfg["amp"] == "fp16")
    criterion = nn.CrossEntropyLoss(label_smoothing=tcfg["label_smoothing"])
    dtype = amp_dtype(tcfg["amp"])
    if dtype is torch.float16 and device.type == "cpu":
        warnings.warn("train.amp=fp16 on CPU is slow and rarely useful; bf16 is the CPU choice", stacklevel=2)

    start_iter, history, last_ckpt = 0, [], None
    found = None if resume is None else load_resume_checkpoint(resume, work_dir, run_id if resume == "auto" else None)
    if resume is not None and found is None and info.is_main:
        print(f"--resume auto: no checkpoint in {work_dir}/checkpoints, starting from epoch 0", flush=True)
    if found is not None:
        last_ckpt, ckpt = found
        run_id = adopt_run(work_dir, run_id, last_ckpt, ckpt.get("run_id"))
        start_iter = restore_training_state(ckpt, model, optimizer, scaler, info)
        scheduler = build_scheduler(optimizer, tcfg, iters_per_epoch, start=start_iter)  # the live config's
        history = list(ckpt.get("history", []))
        if info.is_main:
            print(f"resumed from {last_ckpt} at iteration {start_iter} (epoch {start_iter / iters_per_epoch:.2f})",
                  flush=True)

    run_id = run_id or new_run_id()
    if info.is_main:
        write_run_id(work_dir, run_id)
        dump_config(cfg, os.path.join(work_dir, "config.yaml"))
    raw_model = model
    if info.distributed:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    val_loader = build_eval_loader(val_set, batch_size=tcfg["val_batch_size"],
                                   num_workers=cfg["data"]["num_workers"])
    per_rank = tcfg["batch_size"] // info.world_size
    total_iters = tcfg["epochs"] * iters_per_epoch
    log = RunLogger(work_dir, total_iters, start_iter, enabled=info.is_main)

    def best_top1() -> float:
        return max((r["top1"] for r in history), default=-math.inf)

    def save(iteration: int, path: str) -> None:
        save_training_state(path, raw_model, optimizer, scheduler, scaler, iteration, cfg, info, history=history,
                            run_id=run_id)

    def save_periodic(iteration: int) -> None:
        nonlocal last_ckpt
        last_ckpt = checkpoint_path(work_dir, iteration)
        save(iteration, last_ckpt)
        if info.is_main:
            prune_checkpoints(work_dir, tcfg["keep_checkpoints"])

    def check_loss(loss: torch.Tensor) -> None:
        check_finite_loss(loss, it + 1, last_ckpt, f" (epoch {epoch})")

    it = start_iter
    epoch, offset = divmod(start_iter, iters_per_epoch)
    try:
        while epoch < tcfg["epochs"]:
            seeded.set_epoch(epoch)
            sampler.set_epoch(epoch, start=offset * per_rank)
            model.train()
            epoch_loss, epoch_steps = torch.zeros((), device=device), 0
            window_loss, window_steps, t0 = 0.0, 0, time.perf_counter()
            for images, targets in loader:
                images = images.to(device, non_blocking=True)
                targets = targets.to(device, non_blocking=True)
                lr = optimizer.param_groups[0]["lr"]  # the rate this step uses (scheduler steps after it)
                loss = train_step(model, images, targets, criterion, optimizer, scaler, dtype, check_loss)
                scheduler.step()
                it += 1
                epoch_loss += loss
                epoch_steps += 1
                window_loss += loss.item()
                window_steps += 1
                if it % tcfg["log_interval"] == 0:
                    scalars = {"loss": window_loss / window_steps, "lr": lr,
                               "img_s": window_steps * tcfg["batch_size"] / (time.perf_counter() - t0),
                               "epoch": epoch}
                    log.log(it, scalars)
                    log.progress(window_steps, {"ep": str(epoch), "loss": f"{scalars['loss']:.4f}",
                                                "lr": f"{scalars['lr']:.2e}"})
                    window_loss, window_steps, t0 = 0.0, 0, time.perf_counter()
                if tcfg["ckpt_interval"] > 0 and it % tcfg["ckpt_interval"] == 0 and it % iters_per_epoch:
                    save_periodic(it)
            log.progress(window_steps, {"ep": str(epoch)})

            # Without SyncBN every rank's running statistics differ; score rank 0's model everywhere.
            broadcast_buffers(raw_model)
            metrics = evaluate_classifier(raw_model, val_loader, device, topk, dtype)
            train_loss = all_reduce_mean(epoch_loss / max(epoch_steps, 1)).item()
            previous_best = best_top1()
            history.append({"epoch": epoch + 1, **{f"top{k}": metrics[f"top{k}"] for k in topk},
                            "val_count": metrics["count"], "val_loss": metrics["loss"], "train_loss": train_loss,
                            "lr": lr, "iteration": it})
            log.log(it, {k: v for k, v in history[-1].items() if k != "iteration"}, tag="val")
            log.message(f"epoch {epoch + 1}/{tcfg['epochs']}: " + " ".join(
                f"top{k} {metrics[f'top{k}']:.2f}" for k in topk) + f" (best before {previous_best:.2f})")
            save_periodic(it)
            if history[-1]["top1"] > previous_best:
                save(it, os.path.join(work_dir, "checkpoints", "best.pth"))
            epoch, offset = epoch + 1, 0
    finally:
        log.close()

    summary = {"history": history, **summarize_run(history, cfg["eval"]["last_k"], [f"top{k}" for k in topk])}
    if info.is_main:
        export_model(raw_model.state_dict(), cfg, os.path.join(work_dir, "model_final.pth"),
                     meta={"iteration": it, "epochs": len(history), "best": summary["best"],
                           "last_k": summary["last_k"]})
        write_json({"arch": cfg["model"]["arch"], "padding": cfg["model"]["padding"], "seed": tcfg["seed"],
                    **summary}, os.path.join(work_dir, "summary.json"))
    barrier()
    return raw_model, summary
