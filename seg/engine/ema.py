"""An exponential moving average of the weights (``train.ema_decay``), kept beside the raw weights.

The average is a ``torch.optim.swa_utils.AveragedModel`` (parameters and buffers, so BatchNorm statistics
are averaged too) updated after every step with its EMA rule, ``ema = decay * ema + (1 - decay) * w``. The
update runs on the device without a host sync, and a step the guard skipped (seg.engine.guard) is taken
back with a ``torch.where``: the average never absorbs a skipped step. Its state goes into the periodic
checkpoints (a resume is bit-exact). Every validation scores it beside the raw weights (:meth:`WeightEMA.beside`:
``ema_mIoU`` next to ``mIoU`` in metrics.jsonl and the log; best.pth stays chosen on the raw weights), and at the
end it is saved model-only as ``model_ema.pth`` beside ``model_final.pth``.
"""
from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from seg.config import ConfigError

from .distributed import broadcast_buffers
from .hooks import Hook
from .loop import TrainLoop

__all__ = ["EMA_FILE", "EMA_PREFIX", "WeightEMA"]

EMA_FILE = "model_ema.pth"


#: prefix of the EMA's numbers beside the raw weights' in a validation's metrics
EMA_PREFIX = "ema_"


class WeightEMA(Hook):
    """EMA of `loop.model` with `decay`, scored at each validation through :meth:`beside`."""

    def __init__(self, decay: float):
        self.decay = decay
        self.update = get_ema_multi_avg_fn(decay)  # lerp towards the weights (floats), decay * a + ... (integers)
        self.average: AveragedModel | None = None
        self.pending: dict | None = None  # a resumed checkpoint's average, loaded once the model is known

    def before_train(self, loop: TrainLoop) -> None:
        self.average = AveragedModel(loop.model, multi_avg_fn=self.update, use_buffers=True)
        self.average.n_averaged.fill_(1)  # starts as the weights themselves: every step lerps towards them
        if self.pending is not None:
            self.average.load_state_dict(self.pending)
            self.pending = None
        self.ours = list(self.average.module.parameters()) + list(self.average.module.buffers())
        self.theirs = list(loop.model.parameters()) + list(loop.model.buffers())
        self.saved = [t.detach().clone() for t in self.ours]

    def after_step(self, loop: TrainLoop) -> None:
        assert self.average is not None
        skip = loop.skipped_step
        assert skip is not None
        with torch.no_grad():
            torch._foreach_copy_(self.saved, self.ours)
            groups: dict[tuple, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
            for ours, theirs in zip(self.ours, self.theirs):  # the foreach kernels take one dtype per call
                group = groups.setdefault((ours.device, ours.dtype), ([], []))
                group[0].append(ours.detach())
                group[1].append(theirs.detach())
            for ours_list, theirs_list in groups.values():
                self.update(ours_list, theirs_list, self.average.n_averaged)
            for t, s in zip(self.ours, self.saved):
                torch.where(skip, s, t, out=t.detach())
            self.average.n_averaged += (~skip).long()

    def beside(self, validate: Callable[[nn.Module], dict]) -> Callable[[nn.Module], dict]:
        """`validate` of the raw weights with the EMA's numbers added as ``ema_<name>`` (``ema_mIoU``): what
        the validation hook runs, so that it logs both and keeps choosing best.pth on the raw weights."""
        def both(model: nn.Module) -> dict:
            metrics = validate(model)
            assert self.average is not None
            average = self.average.module
            broadcast_buffers(average)  # as the raw model's: every rank scores rank 0's statistics
            device = next(average.parameters()).device
            # the EMA only looks: its validation leaves the RNG (dropout, data order) where the raw one left it
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                scores = validate(average)
            return {**metrics, **{EMA_PREFIX + k: v for k, v in scores.items() if isinstance(v, (int, float))}}
        return both

    def after_train(self, loop: TrainLoop) -> None:
        assert self.average is not None
        model = self.average.module
        broadcast_buffers(model)
        loop.save_model(os.path.join(loop.work_dir, EMA_FILE), {"ema_decay": self.decay}, model)

    def state_dict(self) -> dict:
        assert self.average is not None
        return {"ema": self.average.state_dict()}

    def load_state_dict(self, checkpoint: dict) -> None:
        if "ema" not in checkpoint:
            raise ConfigError("train.ema_decay: the checkpoint holds no EMA of the weights (its run had "
                              "train.ema_decay=null); resume with that, or start afresh")
        self.pending = checkpoint["ema"]
