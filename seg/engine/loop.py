"""The one training loop of both tasks (segmentation, classification).

:class:`TrainLoop` builds what a step needs (SyncBN conversion and the DDP wrap, optimizer, GradScaler,
loader), runs the steps (seg.engine.step.guarded_step, with its device-side guard: a NaN/inf loss or an
unlearnable batch changes nothing, seg.engine.guard) and resumes. Everything around the steps is a hook
(seg.engine.hooks): the LR schedule, validation, the best checkpoint, periodic checkpoints and the final
model, the metrics writer. A task brings its criterion, its schedule factory and its hooks.

Host syncs: a steady-state step makes none. An iteration that logs, validates or saves makes one
(:meth:`TrainLoop.check_state`): it reads the guard's record, the model's finiteness and the logging
window's sums together, and stops the run there, naming the iteration where a loss became NaN/inf or a
target was invalid (the weights are those from before it).

Files written in `work_dir` (rank 0): config.yaml, run.json, metrics.jsonl, tb/ (seg.engine.hooks.MetricsWriter),
checkpoints/iter_*.pth and model_final.pth (seg.engine.hooks.Checkpointer), checkpoints/best.pth
(seg.engine.hooks.KeepBest).
"""
from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import Dataset

from seg.config import ConfigError, config_changes, dump_config

from .checkpoint import check_same_model, export_model, load_resume_checkpoint, restore_training_state
from .distributed import DistInfo, barrier, convert_sync_bn, describe
from .guard import GuardReport, StepGuard, TargetCheck
from .hooks import Checkpointer, Hook, LRSchedule, MetricsStore, MetricsWriter
from .optim import build_optimizer
from .sampler import EpochSeededDataset
from .speed import compile_module, prepare_model, use_channels_last
from .step import (
    amp_dtype,
    build_train_loader,
    guarded_step,
    nonfinite_loss_error,
    nonfinite_state_error,
    state_finite,
)
from .workdir import adopt_run, claim_on_all_ranks, new_run_id, write_run_id

__all__ = ["TrainLoop", "Schedule"]

# (optimizer, train section, iterations per epoch, start iteration) -> the schedule positioned at start
Schedule = Callable[[torch.optim.Optimizer, dict, int, int], LRScheduler]


class TrainLoop:
    """One run of `model` on `train_set` for `iterations` iterations or `epochs` whole epochs.

    criterion(logits, targets) -> loss; schedule: a :data:`Schedule` factory (seg.engine.hooks.LRSchedule),
    called again on resume so that changed schedule keys take effect from the resumed iteration.
    target_check: the task's device-side check of a batch's targets (seg.engine.guard.TargetCheck), or None:
    a batch no rank can learn from is skipped, which leaves the weights alone but still counts, so the data
    order and the LR schedule stay those of an uninterrupted run. shown_cfg: the config written to
    config.yaml (default `cfg`). After :meth:`fit`, ``model`` is the trained (unwrapped) network.
    """

    def __init__(self, cfg: dict, model: nn.Module, train_set: Dataset, info: DistInfo, work_dir: str, *,
                 criterion: nn.Module, schedule: Schedule, iterations: int | None = None, epochs: int | None = None,
                 hooks: tuple[Hook, ...] = (), target_check: TargetCheck | None = None, shown_cfg: dict | None = None):
        train_cfg = cfg["train"]
        self.cfg, self.train_cfg, self.info, self.work_dir = cfg, train_cfg, info, work_dir
        self.criterion, self.target_check, self.shown_cfg = criterion, target_check, shown_cfg or cfg
        self.model = convert_sync_bn(model, train_cfg["sync_bn"], info)
        # in place, before the optimizer sees the parameters; compiled in train(), around the DDP wrapper
        prepare_model(self.model, info.device, train_cfg["channels_last"])
        self.channels_last = use_channels_last(train_cfg["channels_last"], info.device)
        _print(info, f"distributed: {describe(info, self.model)}")
        self.optimizer = build_optimizer(self.model, train_cfg)
        self.scaler = torch.amp.GradScaler(info.device.type, enabled=train_cfg["amp"] == "fp16")
        self.dtype = amp_dtype(train_cfg["amp"])
        self.guard = StepGuard(self.model, self.optimizer, self.scaler, info.device, target_check)
        if self.dtype is torch.float16 and info.device.type == "cpu":
            warnings.warn("train.amp=fp16 on CPU is slow and rarely useful; bf16 is the CPU choice", stacklevel=3)
        self.train_set = EpochSeededDataset(train_set, seed=train_cfg["seed"])
        # uint8 batches are normalised here, on the device (see seg.data.BatchNormalize)
        self.normalize = getattr(train_set, "normalize", None) or (lambda images: images)
        self.loader, self.sampler, self.iters_per_epoch = build_train_loader(self.train_set, cfg, info)
        self.epochs = epochs
        if epochs is not None and iterations is None:
            self.total = epochs * self.iters_per_epoch
        elif iterations is not None and epochs is None:
            self.total = iterations
        else:
            raise ConfigError(f"a training run is given by iterations or by epochs, exactly one; got iterations="
                              f"{iterations}, epochs={epochs}")
        self.storage = MetricsStore()
        self.lr_schedule = LRSchedule(schedule, self.optimizer, train_cfg, self.iters_per_epoch)
        self.checkpointer = Checkpointer(train_cfg["ckpt_interval"], train_cfg["keep_checkpoints"], epochs is not None)
        self.hooks = [self.lr_schedule, *hooks, self.checkpointer, MetricsWriter()]
        self.iteration, self.epoch, self.lr, self.skipped = 0, 0, train_cfg["lr"], 0
        self.loss: torch.Tensor | None = None  # the last step's loss (device scalar)
        self.skipped_step: torch.Tensor | None = None  # whether the guard skipped the last step (device bool)
        # the newest checkpoint written or resumed from: non-finite errors name it as the place to go back to
        self.last_ckpt: str | None = None
        self.checked: int | None = None  # the iteration whose weights check_state last found finite
        self.hook_failed = False  # whether the error that stops the run came from an after_step/after_epoch hook
        self.run_id: str | None = None
        self.meta: dict = {}  # what the hooks add to the final export's meta

    @property
    def scheduler(self) -> LRScheduler:
        return self.lr_schedule.scheduler

    # ------------------------------------------------------------------ the run, top to bottom
    def fit(self, resume: str | None = None, overwrite: bool = False) -> nn.Module:
        """Claim the work dir, resume (None, "auto" or a checkpoint path), train to the end."""
        lock, self.run_id = claim_on_all_ranks(self.work_dir, resume, overwrite, self.info)
        try:
            if resume is not None:
                self.resume(resume)
            self.call("before_train")
            try:
                self.run_id = self.run_id or new_run_id()
                if self.info.is_main:
                    write_run_id(self.work_dir, self.run_id)
                    dump_config(self.shown_cfg, os.path.join(self.work_dir, "config.yaml"))
                self.train()
                self.call("after_train")
            except BaseException:
                self.call("after_failure")
                raise
            return self.model
        finally:
            if lock is not None:
                lock.release()

    def train(self) -> None:
        """Iterations from the current one to the last, calling the hooks after each."""
        net = self.model
        if self.info.distributed:
            net = DistributedDataParallel(self.model, device_ids=[self.info.device.index]
                                          if self.info.device.type == "cuda" else None)
        net = compile_module(net, self.train_cfg["compile"])  # checkpoints keep coming from self.model
        net.train()
        window = _Window()
        self.guard.start(self.iteration)
        batches = self.batches()
        try:
            while self.iteration < self.total:
                self.epoch, images, targets = next(batches)
                self.lr = self.optimizer.param_groups[0]["lr"]  # the rate this step uses: the schedule steps after
                self.loss, self.skipped_step = guarded_step(net, images, targets, self.criterion, self.optimizer,
                                                            self.scaler, self.dtype, self.guard)
                self.iteration += 1
                window.add(self.loss, self.skipped_step)
                if self.iteration % self.train_cfg["log_interval"] == 0 or self.iteration == self.total:
                    self.log_window(window)
                with window.paused():  # validation and checkpoints are no training time: img/s leaves them out
                    self.hook_failed = True
                    self.call("after_step")
                    if self.iteration % self.iters_per_epoch == 0:
                        self.call("after_epoch")
                    self.hook_failed = False
        finally:
            batches.close()

    def save_model(self, path: str, meta: dict, model: nn.Module | None = None) -> None:
        """Model-only file of `model` (default: the trained one; rank 0 writes, every rank waits), written only
        when every parameter and buffer of the trained model is finite; its meta: the iteration, the run id
        and `meta`."""
        self.check_state()
        if self.info.is_main:
            export_model((model or self.model).state_dict(), self.cfg, path,
                         {"iteration": self.iteration, "run_id": self.run_id, **meta})
        barrier()

    # ------------------------------------------------------------------ pieces
    def call(self, event: str) -> None:
        for hook in self.hooks:
            getattr(hook, event)(self)

    def hook_states(self) -> dict:
        """The hooks' entries of a full checkpoint."""
        return {k: v for hook in self.hooks for k, v in hook.state_dict().items()}

    def batches(self):
        """(epoch, images, targets) on the device from the current iteration on, across epochs, forever."""
        per_rank = self.train_cfg["batch_size"] // self.info.world_size
        epoch, offset = divmod(self.iteration, self.iters_per_epoch)
        while True:
            self.sampler.set_epoch(epoch, start=offset * per_rank)  # the epoch travels with each index
            for images, targets in self.loader:
                images = images.to(self.info.device, non_blocking=True)
                if self.channels_last:  # on the device, where the (uint8) batch is cheapest to rearrange
                    images = images.contiguous(memory_format=torch.channels_last)
                yield epoch, self.normalize(images), targets.to(self.info.device, non_blocking=True)
            epoch, offset = epoch + 1, 0

    def check_state(self, window: _Window | None = None) -> float | None:
        """The one host sync of an iteration that logs, validates or saves (collective: every rank calls it at
        the same iterations). Reads together the guard's record, whether every parameter and buffer is
        finite, and `window`'s loss sums; stops the run on what the guard saw or on a non-finite state, and
        returns the window's mean loss (None: no window, or no step of it counted).

        The logging window, best.pth, the periodic checkpoint and the export may all ask at one iteration;
        nothing updates the weights in between (broadcast_buffers copies rank 0's checked buffers), so the
        later calls skip the read."""
        if self.checked == self.iteration and window is None:
            return None
        parts = [self.guard.record, state_finite(self.model).double().view(1)]
        values = torch.cat(parts + ([window.sums] if window is not None and window.sums is not None else [])).tolist()
        size = self.guard.record.numel()
        self.checked = self.iteration
        self.apply_report(self.guard.report(values[:size]))
        if values[size] < 1:
            raise nonfinite_state_error(self.model, self.iteration, self.last_ckpt)
        return _Window.mean_of(values[size + 1:])

    def apply_report(self, report: GuardReport) -> None:
        """Stop on invalid targets or a NaN/inf loss the guard saw (its steps changed nothing); count and
        report the skipped steps."""
        if report.invalid_iteration and self.target_check is not None:
            raise self.target_check.invalid(report.invalid_iteration, report.invalid_values)
        if report.nonfinite_iteration:
            epoch = (report.nonfinite_iteration - 1) // self.iters_per_epoch
            raise nonfinite_loss_error(report.nonfinite_loss, report.nonfinite_iteration, self.last_ckpt,
                                       f" (epoch {epoch})")
        if report.skipped and self.target_check is not None:
            self.skipped += report.skipped
            reason = self.target_check.skipped(report.skipped, report.first_skipped, report.last_skipped)
            self.storage.message(f"warning: {reason}; step skipped ({self.skipped} so far)")

    def log_window(self, window: _Window) -> None:
        loss = self.check_state(window)
        scalars = {"loss": loss, "lr": self.lr, "epoch": self.epoch + 1,  # numbered from 1, as the val lines
                   "img_s": window.steps * self.train_cfg["batch_size"] / window.seconds(),
                   **({"skipped_batches": self.skipped} if self.skipped else {})}
        self.storage.put(self.iteration, scalars)
        self.storage.progress(window.steps, {"epoch": str(self.epoch + 1), "loss": f"{loss or math.nan:.4f}",
                                         "lr": f"{self.lr:.2e}", "img/s": f"{scalars['img_s']:.1f}"})
        window.reset()

    def resume(self, spec: str) -> None:
        """spec "auto": newest usable periodic checkpoint of this work dir's run (if any); else a checkpoint path.

        The LR schedule is rebuilt from the live config at the resumed iteration, so changed schedule keys
        (train.lr, the run's length, warm-up, decay) take effect from there; every changed key is listed.
        """
        found, rejected = load_resume_checkpoint(spec, self.work_dir, self.run_id if spec == "auto" else None)
        self.checkpointer.verified.update(rejected)
        if found is None:
            _print(self.info, f"--resume auto: no checkpoint in {self.work_dir}/checkpoints, starting from scratch")
            return
        path, ckpt = found
        self.run_id = adopt_run(self.work_dir, self.run_id, path, ckpt.get("run_id"))
        check_same_model(path, ckpt["config"].get("model") or {}, self.cfg["model"])
        saved = ckpt["config"].get("train", {}).get("optimizer", "sgd")  # checkpoints from before the choice: SGD
        if saved != self.train_cfg["optimizer"]:
            raise ConfigError(f"{path} was trained with train.optimizer={saved}; resume it with that optimizer "
                              f"(its state does not carry over to {self.train_cfg['optimizer']}) or start afresh")
        self.iteration = restore_training_state(path, ckpt, self.model, self.optimizer, self.scaler, self.info)
        self.checkpointer.verified[path] = None
        if self.iteration > self.total:
            raise ConfigError(f"{self.length_key()} is below the iteration {self.iteration} of {path}; resume "
                              f"with a run of at least {self.iteration} iterations")
        self.lr_schedule.restart(self.iteration)
        for hook in self.hooks:
            hook.load_state_dict(ckpt)
        self.last_ckpt = path
        _print(self.info, f"resumed from {path} at iteration {self.iteration} "
                          f"(epoch {self.iteration / self.iters_per_epoch:.2f})")
        changed = config_changes(ckpt["config"].get("train", {}), self.train_cfg, "train.")
        if changed:
            _print(self.info, f"resume: {'; '.join(changed)} (changed since the checkpoint) take effect from "
                              f"iteration {self.iteration}: LR schedule rebuilt there, lr now "
                              f"{self.optimizer.param_groups[0]['lr']:.4g}")

    def length_key(self) -> str:
        if self.epochs is None:
            return f"train.iterations={self.total}"
        return f"train.epochs={self.epochs} ({self.total} iterations)"


class _Window:
    """Losses and wall time since the last log record; skipped steps count as steps, not as losses.

    The losses of the counted steps and their number are summed on their device in float64 (the sum a Python
    float of ``.item()``s would be), so that the window never waits for the device: the loop reads the sums
    with its other values in one sync (:meth:`mean_of`)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.sums: torch.Tensor | None = None  # float64 (2,): sum of the counted losses, their number
        self.steps, self.t0 = 0, time.perf_counter()

    def add(self, loss: torch.Tensor | None, skipped: torch.Tensor | None = None) -> None:
        """One step: its loss (None or `skipped` true: a step without one)."""
        self.steps += 1
        if loss is None:
            return
        if self.sums is None:
            self.sums = torch.zeros(2, dtype=torch.float64, device=loss.device)
        counted = torch.ones((), dtype=torch.bool, device=loss.device) if skipped is None else ~skipped
        self.sums += torch.stack([torch.where(counted, loss.detach().double(), 0.0), counted.double()])

    @staticmethod
    def mean_of(sums: list[float]) -> float | None:
        """The mean loss from the host values of ``sums`` (None: no counted step)."""
        return sums[0] / sums[1] if sums and sums[1] else None

    def mean(self) -> float | None:
        return self.mean_of(self.sums.tolist() if self.sums is not None else [])

    def seconds(self) -> float:
        return time.perf_counter() - self.t0

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Wall time spent inside does not count towards the window's seconds."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.t0 += time.perf_counter() - start


def _print(info: DistInfo, text: str) -> None:
    if info.is_main:
        print(text, flush=True)
