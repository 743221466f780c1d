"""Device-side guards of the training step, so that a steady-state step never waits for the device.

A step that must not count leaves the weights, the optimizer state (momentum), the BatchNorm statistics and
the loss scale exactly as they were. It is one where, on any rank, the loss is NaN/inf, or where the task's
:class:`TargetCheck` finds no labelled pixel on every rank (the step is skipped and counted) or a target
value outside the classes (a data error). The decision is a device tensor: the optimizer is fused SGD or
AdamW, whose kernel skips its update (AdamW: and takes its step count back) when its ``found_inf`` flag is
set (the GradScaler's mechanism), and the
buffers are put back with ``torch.where``. The per-rank flags are all-reduced (one collective a step), so
every rank skips the same steps.

What the guard saw is kept in a small device record and read by the training loop in the one host sync of
an iteration that logs, validates or saves (:meth:`StepGuard.report`); that read raises with the iteration
where things went wrong, so nothing non-finite or invalid is ever written.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from seg.errors import SegError, UnsupportedError

from .distributed import all_reduce_mean

__all__ = ["TargetCheck", "GuardReport", "StepGuard"]

# slots of StepGuard.record (float64; iterations are 1-based, 0 = not seen since the last report)
_FIRST_NONFINITE, _NONFINITE_LOSS, _FIRST_INVALID, _INVALID_LO, _INVALID_HI, _INVALID_HERE, _SKIPPED, \
    _FIRST_SKIPPED, _LAST_SKIPPED = range(9)
RECORD_SIZE = 9


class TargetCheck(ABC):
    """A task's check of a training batch's targets, made on the device without a host sync."""

    @abstractmethod
    def check(self, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(targets the loss sees, with invalid values made harmless; learnable: bool scalar, this rank's batch
        has something to learn from; invalid: float64 (3,) [1 if a value is invalid, smallest, largest invalid
        value])."""

    @abstractmethod
    def skipped(self, count: int, first: int, last: int) -> str:
        """Why `count` steps between iterations `first` and `last` were skipped (no rank had anything to learn)."""

    @abstractmethod
    def invalid(self, iteration: int, values: list[int]) -> SegError:
        """The error for invalid targets first met at `iteration`: `values` (smallest and largest) on this
        rank, [] when they were on another rank."""


@dataclass
class GuardReport:
    """What the guard saw since the last report (host values)."""
    nonfinite_iteration: int  # first iteration with a NaN/inf loss on a rank; 0: none
    nonfinite_loss: float  # this rank's loss there
    invalid_iteration: int  # first iteration with an invalid target on a rank; 0: none
    invalid_values: list[int]  # smallest and largest invalid value there on this rank ([] if on another)
    skipped: int  # steps skipped for want of anything to learn
    first_skipped: int
    last_skipped: int


class StepGuard:
    """Makes a training step a no-op, on the device, when it must not count; keeps the record of why.

    `model`: the bare network (its buffers are restored after a skipped step); `optimizer`: fused SGD or AdamW (its
    ``found_inf`` skips the update on the device); `scaler`: the run's GradScaler (its scale is restored too);
    `targets`: the task's check, or None (every batch learnable).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                 device: torch.device, targets: TargetCheck | None = None):
        if not getattr(optimizer, "_step_supports_amp_scaling", False):
            raise UnsupportedError(f"StepGuard needs an optimizer that skips its update on a device flag "
                                   f"(found_inf, as fused SGD does), got {type(optimizer).__name__}")
        self.optimizer, self.scaler, self.targets = optimizer, scaler, targets
        self.buffers = list(model.buffers())
        self.saved = [b.clone() for b in self.buffers]
        self.record = torch.zeros(RECORD_SIZE, dtype=torch.float64, device=device)
        self.iteration = torch.zeros((), dtype=torch.float64, device=device)
        _zero_momentum(optimizer)

    def start(self, iteration: int) -> None:
        """The loop is at `iteration` (steps done); fill_ writes it on the device without a copy from the host."""
        self.iteration.fill_(iteration)

    def check(self, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(targets for the loss, learnable, invalid) of the task's check; also snapshots the buffers."""
        if self.buffers:  # a network without buffers (no BatchNorm) has nothing to snapshot
            torch._foreach_copy_(self.saved, self.buffers)
        if self.targets is None:
            return targets, None, None
        return self.targets.check(targets)

    def decide(self, loss: torch.Tensor, learnable: torch.Tensor | None, invalid: torch.Tensor | None
               ) -> torch.Tensor:
        """Bool scalar: skip this step (on every rank alike: collective under DDP); records why."""
        self.iteration += 1
        ones = torch.ones((), dtype=torch.float64, device=loss.device)
        local = torch.stack([(~torch.isfinite(loss.detach())).double(),
                             learnable.double() if learnable is not None else ones,
                             invalid[0] if invalid is not None else ones - 1])
        nonfinite, learnable_any, invalid_any = (all_reduce_mean(local) > 0).unbind()
        unlearnable = ~learnable_any & ~nonfinite & ~invalid_any
        self._note(loss.detach().double(), nonfinite, invalid_any, unlearnable, invalid)
        return nonfinite | invalid_any | ~learnable_any

    def _note(self, loss: torch.Tensor, nonfinite: torch.Tensor, invalid_any: torch.Tensor,
              unlearnable: torch.Tensor, invalid: torch.Tensor | None) -> None:
        r, it = self.record, self.iteration
        first_nonfinite, first_invalid = nonfinite & (r[_FIRST_NONFINITE] == 0), invalid_any & (r[_FIRST_INVALID] == 0)
        details = invalid if invalid is not None else torch.zeros(3, dtype=torch.float64, device=r.device)
        new = torch.stack([it, loss, it, details[1], details[2], details[0], r[_SKIPPED] + 1, it, it])
        take = torch.stack([first_nonfinite, first_nonfinite, first_invalid, first_invalid, first_invalid,
                            first_invalid, unlearnable, unlearnable & (r[_SKIPPED] == 0), unlearnable])
        torch.where(take, new, r, out=r)

    def step(self, skip: torch.Tensor) -> None:
        """The optimizer and loss-scale update of the step, both left out when `skip` (no host sync)."""
        found_inf = skip.float()
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)  # records the scaler's own overflow flag, on the device
            # the GradScaler keeps that flag in this private dict (torch 2.x); its step would sync on it
            flags = self.scaler._per_optimizer_states[id(self.optimizer)]["found_inf_per_device"].values()
            found_inf = torch.maximum(found_inf, torch.stack(list(flags)).sum().clamp(max=1))
        self.optimizer.found_inf = found_inf  # type: ignore[attr-defined]
        try:
            self.optimizer.step()
        finally:
            del self.optimizer.found_inf  # type: ignore[attr-defined]
        if self.scaler.is_enabled():
            state = [self.scaler._scale, self.scaler._growth_tracker]
            before = [t.clone() for t in state if t is not None]
            self.scaler.update()
            _restore_if(skip, state, before)
        _restore_if(skip, self.buffers, self.saved)

    def report(self, values: list[float]) -> GuardReport:
        """The record's host `values` (read by the caller, with its other values, in one sync) as a report;
        the device record starts afresh."""
        self.record.zero_()
        n = [int(x) if math.isfinite(x) else 0 for x in values]  # the integer slots (the loss slot may be NaN/inf)
        return GuardReport(nonfinite_iteration=n[_FIRST_NONFINITE], nonfinite_loss=values[_NONFINITE_LOSS],
                           invalid_iteration=n[_FIRST_INVALID],
                           invalid_values=sorted({n[_INVALID_LO], n[_INVALID_HI]}) if n[_INVALID_HERE] else [],
                           skipped=n[_SKIPPED], first_skipped=n[_FIRST_SKIPPED], last_skipped=n[_LAST_SKIPPED])

def _restore_if(skip: torch.Tensor, tensors: list, saved: list) -> None:
    """tensors[i] = saved[i] where `skip`, in place and bit for bit (a where, not arithmetic: NaN-proof)."""
    for t, s in zip(tensors, saved):
        if t is not None:
            torch.where(skip, s, t, out=t)


def _zero_momentum(optimizer: torch.optim.Optimizer) -> None:
    """Give every SGD parameter a zero momentum buffer before the first step. Fused SGD creates them with
    torch.empty_like in its first step and never fills them when that step is skipped; from zeros, the first
    real step gives momentum * 0 + grad = grad, what a first step stores."""
    for group in optimizer.param_groups:
        if group.get("momentum", 0):
            for p in group["params"]:
                optimizer.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
