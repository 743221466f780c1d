"""One training step and its guards: seeding, determinism, the AMP/GradScaler step (guarded on the device by
seg.engine.guard), the finite-loss and finite-state errors, and the per-rank training loader.

Batch split: ``train.batch_size`` is the GLOBAL batch. Each of the W ranks loads
``batch_size // W`` images per iteration (W must divide it) from its own disjoint share of the epoch's
permutation; DDP averages the gradients, so one optimizer step sees the whole global batch and the
learning rate does not depend on W. Without SyncBN (e.g. on CPU) BatchNorm statistics are per rank,
over ``batch_size // W`` images.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from seg.config import ConfigError
from seg.errors import SegError

from .checkpoint import nonfinite_entries
from .distributed import DistInfo, all_reduce_mean
from .guard import StepGuard
from .sampler import ResumableDistributedSampler, dataset_len

__all__ = ["NonFiniteLossError", "seed_everything", "set_determinism", "amp_dtype", "train_step", "guarded_step",
           "nonfinite_loss_error", "state_finite", "nonfinite_state_error", "build_train_loader"]

_AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


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
               optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, dtype: torch.dtype | None
               ) -> torch.Tensor:
    """One forward/backward/step on a (B, 3, H, W) batch with (B, H, W) int64 targets, unguarded (benchmarks);
    returns the detached loss."""
    loss = _forward(model, images, targets, criterion, dtype)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def guarded_step(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, criterion: nn.Module,
                 optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, dtype: torch.dtype | None,
                 guard: StepGuard) -> tuple[torch.Tensor, torch.Tensor]:
    """The training loop's step: as :func:`train_step`, but a step that must not count (a NaN/inf loss, a batch
    the guard's target check rejects) changes nothing, decided on the device (seg.engine.guard), so the step
    never waits for the device. Returns (detached loss, bool scalar: the step was skipped), both on the device.
    """
    targets, learnable, invalid = guard.check(targets)
    loss = _forward(model, images, targets, criterion, dtype)
    skip = guard.decide(loss, learnable, invalid)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    guard.step(skip)
    return loss.detach(), skip


def _forward(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, criterion: nn.Module,
             dtype: torch.dtype | None) -> torch.Tensor:
    with torch.autocast(images.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        logits = model(images)
    return criterion(logits.float(), targets)


def nonfinite_loss_error(loss: float, step: int, last_ckpt: str | None, where: str = "") -> NonFiniteLossError:
    """The error for a NaN/inf `loss` (this rank's value) first met at iteration `step` (plus `where`, e.g.
    " (epoch 3)"), naming the last good checkpoint to resume from."""
    return NonFiniteLossError(f"loss is {loss} at iteration {step}{where}; stopping. {_last_good(last_ckpt)}")


def _last_good(last_ckpt: str | None) -> str:
    return (f"Last good checkpoint (verified finite): {last_ckpt or 'none written yet'}; resume with "
            "--resume auto, maybe with a lower train.lr (a changed schedule takes effect on resume)")


def state_finite(model: nn.Module) -> torch.Tensor:
    """Float scalar on the device: 1 when every parameter and buffer of `model` is finite on every rank
    (all-reduced: collective under DDP), read by the caller with its other values in one sync."""
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    return all_reduce_mean(torch.stack([torch.isfinite(t).all() for t in tensors]).all().float())


def nonfinite_state_error(model: nn.Module, step: int, last_ckpt: str | None) -> NonFiniteLossError:
    """The error for a parameter or buffer (BatchNorm statistics) holding NaN/inf after iteration `step`."""
    bad = nonfinite_entries(model.state_dict()) or ["(on another rank)"]
    return NonFiniteLossError(f"the model diverged: {len(bad)} parameter/buffer tensor(s) hold NaN/inf after "
                              f"iteration {step}, e.g. {bad[:3]}; stopping without saving them. "
                              f"{_last_good(last_ckpt)}")


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
    size = dataset_len(dataset)
    sampler = ResumableDistributedSampler(size, world, info.rank, seed=cfg["train"]["seed"])
    iters_per_epoch = sampler.per_rank // per_rank
    if iters_per_epoch == 0:
        raise ConfigError(f"training set has {size} samples, fewer than train.batch_size={batch} "
                          f"(global; each of the {world} process(es) needs {per_rank} per step)")
    workers = cfg["data"]["num_workers"]
    loader = DataLoader(dataset, batch_size=per_rank, sampler=sampler, num_workers=workers, drop_last=True,
                        pin_memory=info.device.type == "cuda", persistent_workers=workers > 0,
                        # own generator: creating an iterator must not consume the global torch RNG,
                        # or a resumed run's dropout masks would drift from the uninterrupted run's.
                        generator=torch.Generator().manual_seed(cfg["train"]["seed"]))
    return loader, sampler, iters_per_epoch
