"""SGD with optional weight-decay exclusion, iteration-based poly LR with linear warm-up, and the loss."""
from __future__ import annotations

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["build_optimizer", "PolyLR", "build_criterion"]


def build_optimizer(model: nn.Module, train_cfg: dict) -> torch.optim.SGD:
    """SGD over the trainable parameters of `model`.

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
    return torch.optim.SGD(groups, lr=train_cfg["lr"], momentum=train_cfg["momentum"],
                           nesterov=train_cfg["nesterov"])


class PolyLR(LRScheduler):
    """lr(it) = base_lr * (1 - it / max_iters) ** power, times a linear warm-up over the first iterations.

    Warm-up ramps the multiplier from `warmup_factor` at it = 0 to 1 at it = warmup_iters. Stepped once
    per iteration. Its state_dict holds only numbers, so checkpoints stay weights_only-loadable.
    """

    def __init__(self, optimizer, max_iters: int, power: float = 0.9, warmup_iters: int = 0,
                 warmup_factor: float = 0.1, last_epoch: int = -1):
        if max_iters <= 0:
            raise ValueError(f"PolyLR: max_iters must be > 0, got {max_iters}")
        self.max_iters, self.power = max_iters, power
        self.warmup_iters, self.warmup_factor = warmup_iters, warmup_factor
        super().__init__(optimizer, last_epoch)

    def factor(self, it: int) -> float:
        poly = max(0.0, 1.0 - it / self.max_iters) ** self.power
        if it < self.warmup_iters:
            alpha = it / self.warmup_iters
            poly *= self.warmup_factor * (1 - alpha) + alpha
        return poly

    def get_lr(self) -> list[float]:
        f = self.factor(self.last_epoch)
        return [base * f for base in self.base_lrs]


def build_criterion(train_cfg: dict, device: torch.device) -> nn.CrossEntropyLoss:
    """Pixel-wise cross-entropy ignoring `ignore_index`, with optional per-class weights."""
    weights = train_cfg["class_weights"]
    if weights is not None:
        weights = torch.tensor(weights, dtype=torch.float32, device=device)
    return nn.CrossEntropyLoss(weight=weights, ignore_index=train_cfg["ignore_index"])
