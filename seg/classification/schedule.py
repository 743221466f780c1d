"""Epoch step decay (the PyTorch ImageNet example's schedule), stepped per iteration so it resumes mid-epoch."""
from __future__ import annotations

from torch.optim.lr_scheduler import LRScheduler

__all__ = ["StepEpochLR"]


class StepEpochLR(LRScheduler):
    """lr(it) = base_lr * gamma ** (epoch // step_epochs), epoch = it // iters_per_epoch, with an optional
    linear warm-up from `warmup_factor` to 1 over the first `warmup_epochs` epochs (per iteration).

    Stepped once per iteration: the multiplier depends on the iteration count alone, so a run resumed at
    any iteration follows the uninterrupted schedule. Its state_dict holds only numbers (weights_only-safe).
    """

    def __init__(self, optimizer, iters_per_epoch: int, step_epochs: int = 30, gamma: float = 0.1,
                 warmup_epochs: int = 0, warmup_factor: float = 0.1, last_epoch: int = -1):
        if iters_per_epoch <= 0 or step_epochs <= 0:
            raise ValueError(f"StepEpochLR: iters_per_epoch ({iters_per_epoch}) and step_epochs ({step_epochs}) "
                             "must be > 0")
        self.iters_per_epoch, self.step_epochs, self.gamma = iters_per_epoch, step_epochs, gamma
        self.warmup_iters, self.warmup_factor = warmup_epochs * iters_per_epoch, warmup_factor
        super().__init__(optimizer, last_epoch)

    def factor(self, it: int) -> float:
        f = self.gamma ** ((it // self.iters_per_epoch) // self.step_epochs)
        if it < self.warmup_iters:
            alpha = it / self.warmup_iters
            f *= self.warmup_factor * (1 - alpha) + alpha
        return f

    def get_lr(self) -> list[float]:
        f = self.factor(self.last_epoch)
        return [base * f for base in self.base_lrs]
