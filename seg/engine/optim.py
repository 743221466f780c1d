"""SGD or AdamW (fused) with optional weight-decay exclusion, and iteration-stepped LR schedules (poly, cosine;
epoch steps) with linear warm-up."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from seg.errors import InputError

__all__ = ["build_optimizer", "WarmupLR", "PolyLR", "CosineLR", "StepEpochLR", "restart_schedule", "build_scheduler"]


def build_optimizer(model: nn.Module, train_cfg: dict) -> torch.optim.Optimizer:
    """``train.optimizer`` (SGD with momentum, or AdamW) over the trainable parameters of `model`, fused: one
    kernel per step, and its update (AdamW: its step count too) can be skipped on a device flag
    (``found_inf``) without a host sync (seg.engine.guard).

    With ``no_wd_norm_bias`` the 1-d parameters (biases and norm scales/shifts) go to a group without
    weight decay: decaying a BN scale towards 0 shrinks the layer's output, not its complexity.
    """
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if train_cfg["no_wd_norm_bias"]:
        groups = [
            {"params": [p for _, p in params if p.ndim > 1], "weight_decay": train_cfg["weight_decay"]},
            {"params": [p for _, p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]
    else:
        groups = [{"params": [p for _, p in params], "weight_decay": train_cfg["weight_decay"]}]
    if train_cfg["optimizer"] == "adamw":
        beta1, beta2 = train_cfg["betas"]
        return torch.optim.AdamW(groups, lr=train_cfg["lr"], betas=(beta1, beta2), fused=True)
    return torch.optim.SGD(groups, lr=train_cfg["lr"], momentum=train_cfg["momentum"],
                           nesterov=train_cfg["nesterov"], fused=True)


class WarmupLR(LRScheduler, ABC):
    """Base of the iteration-stepped schedules: lr(it) = base_lr * decay(it), times a linear warm-up.

    Warm-up ramps the multiplier from `warmup_factor` at it = 0 to 1 at it = warmup_iters. Subclasses
    set their own attributes before calling ``super().__init__`` (it computes the first lr) and define
    `decay`. The state_dict holds only numbers, so checkpoints stay weights_only-loadable.
    """

    def __init__(self, optimizer, warmup_iters: int = 0, warmup_factor: float = 0.1, last_epoch: int = -1):
        self.warmup_iters, self.warmup_factor = warmup_iters, warmup_factor
        super().__init__(optimizer, last_epoch)

    @abstractmethod
    def decay(self, it: int) -> float:
        """The schedule's multiplier of the base lr at iteration `it`, before the warm-up."""

    def factor(self, it: int) -> float:
        f = self.decay(it)
        if it < self.warmup_iters:
            alpha = it / self.warmup_iters
            f *= self.warmup_factor * (1 - alpha) + alpha
        return f

    def get_lr(self) -> list[float | torch.Tensor]:  # base_lrs may hold tensors (torch's own type)
        f = self.factor(self.last_epoch)
        return [base * f for base in self.base_lrs]


class PolyLR(WarmupLR):
    """lr(it) = base_lr * (1 - it / max_iters) ** power, times a linear warm-up over the first iterations.

    Stepped once per iteration (segmentation).
    """

    def __init__(self, optimizer, max_iters: int, power: float = 0.9, warmup_iters: int = 0,
                 warmup_factor: float = 0.1, last_epoch: int = -1):
        if max_iters <= 0:
            raise InputError(f"PolyLR: max_iters must be > 0, got {max_iters}")
        self.max_iters, self.power = max_iters, power
        super().__init__(optimizer, warmup_iters, warmup_factor, last_epoch)

    def decay(self, it: int) -> float:
        return max(0.0, 1.0 - it / self.max_iters) ** self.power


class CosineLR(WarmupLR):
    """lr(it) = base_lr * (1 + cos(pi * it / max_iters)) / 2, times a linear warm-up over the first iterations.

    Stepped once per iteration (segmentation)."""

    def __init__(self, optimizer, max_iters: int, warmup_iters: int = 0, warmup_factor: float = 0.1,
                 last_epoch: int = -1):
        if max_iters <= 0:
            raise InputError(f"CosineLR: max_iters must be > 0, got {max_iters}")
        self.max_iters = max_iters
        super().__init__(optimizer, warmup_iters, warmup_factor, last_epoch)

    def decay(self, it: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(it, self.max_iters) / self.max_iters))


class StepEpochLR(WarmupLR):
    """lr(it) = base_lr * gamma ** (epoch // step_epochs), epoch = it // iters_per_epoch, with an optional
    linear warm-up from `warmup_factor` to 1 over the first `warmup_epochs` epochs (per iteration).

    The PyTorch ImageNet example's schedule (classification). Stepped once per iteration: the multiplier
    depends on the iteration count alone, so a run resumed at any iteration follows the uninterrupted one.
    """

    def __init__(self, optimizer, iters_per_epoch: int, step_epochs: int = 30, gamma: float = 0.1,
                 warmup_epochs: int = 0, warmup_factor: float = 0.1, last_epoch: int = -1):
        if iters_per_epoch <= 0 or step_epochs <= 0:
            raise InputError(f"StepEpochLR: iters_per_epoch ({iters_per_epoch}) and step_epochs ({step_epochs}) "
                             "must be > 0")
        self.iters_per_epoch, self.step_epochs, self.gamma = iters_per_epoch, step_epochs, gamma
        super().__init__(optimizer, warmup_epochs * iters_per_epoch, warmup_factor, last_epoch)

    def decay(self, it: int) -> float:
        return self.gamma ** ((it // self.iters_per_epoch) // self.step_epochs)


def restart_schedule(optimizer: torch.optim.Optimizer, base_lr: float, start: int) -> int:
    """Make `base_lr` the rate every schedule built next scales, whatever a resumed checkpoint held, and
    return the ``last_epoch`` that positions a new schedule at iteration `start` (its constructor takes one
    step). Every schedule here is a closed form of the iteration, so a rebuilt one continues exactly where
    an unchanged one would."""
    for group in optimizer.param_groups:
        group["initial_lr"] = base_lr
    return start - 1


def build_scheduler(optimizer: torch.optim.Optimizer, train_cfg: dict, iters_per_epoch: int,
                    start: int = 0) -> WarmupLR:
    """Segmentation's schedule: ``train.lr_schedule`` (PolyLR or CosineLR) over ``train.iterations``
    (seg.config.SCHEMA) with its warm-up,
    positioned at iteration `start` (a resumed run: the schedule of the config as it is now, at the resumed
    step). `iters_per_epoch` is unused; the argument list is the one the training loop calls every
    schedule factory with."""
    last = restart_schedule(optimizer, train_cfg["lr"], start)
    if train_cfg["lr_schedule"] == "cosine":
        return CosineLR(optimizer, train_cfg["iterations"], train_cfg["warmup_iters"], train_cfg["warmup_factor"],
                        last_epoch=last)
    return PolyLR(optimizer, train_cfg["iterations"], train_cfg["poly_power"], train_cfg["warmup_iters"],
                  train_cfg["warmup_factor"], last_epoch=last)
