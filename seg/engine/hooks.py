"""The side jobs of the training loop (seg.engine.loop.TrainLoop), each a :class:`Hook`, over one
:class:`MetricsStore` (``loop.storage``).

Events, in the order the loop calls them (each gets the loop; the hooks of an event run in list order):

* ``before_train``: once, after a resume, before anything is written to the work dir (data checks: a
  failure there leaves the work dir as it was).
* ``after_step``: after every iteration; ``loop.iteration`` already counts it, ``loop.lr`` is the rate it
  used, ``loop.loss`` its loss and ``loop.skipped_step`` whether the guard skipped it (both device scalars:
  reading them waits for the device).
* ``after_epoch``: after the last iteration of every epoch, after that iteration's ``after_step``.
* ``after_train``: once, after the last iteration.
* ``after_failure``: once, when the run stops on an error after ``before_train`` (``loop.hook_failed``:
  whether a hook of ``after_step`` / ``after_epoch`` raised it), before the error goes on.

The loop runs its own hooks around the task's: :class:`LRSchedule` first (the schedule steps before
anything reads the optimizer), then the task's hooks (validation, best checkpoint, EMA...), then
:class:`Checkpointer` (a periodic checkpoint carries what the hooks of its iteration found; the final
export carries their ``loop.meta``), then :class:`MetricsWriter` (writes what all of them stored, in order).

A hook's ``state_dict()`` entries go into every full checkpoint (top level) and come back through
``load_state_dict(checkpoint)`` on resume.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from .checkpoint import checkpoint_path, nonfinite_entries, prune_checkpoints, save_training_state
from .distributed import broadcast_buffers
from .logger import RunLogger

if TYPE_CHECKING:  # the loop imports this module; hooks only name its type
    import torch

    from .loop import Schedule, TrainLoop

__all__ = ["Hook", "MetricsStore", "LRSchedule", "Validation", "AfterValidation", "KeepBest", "Checkpointer",
           "MetricsWriter"]


class Hook:
    """Extension point of the training loop; every event is a no-op here (see the module docstring)."""

    def before_train(self, loop: TrainLoop) -> None:
        pass

    def after_step(self, loop: TrainLoop) -> None:
        pass

    def after_epoch(self, loop: TrainLoop) -> None:
        pass

    def after_train(self, loop: TrainLoop) -> None:
        pass

    def after_failure(self, loop: TrainLoop) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, checkpoint: dict) -> None:
        pass


class MetricsStore:
    """What the loop and its hooks report, kept in order until :class:`MetricsWriter` writes it.

    ``validations[tag]``: (iteration, the full result) of the newest validation under `tag`, for the hooks
    after it (best checkpoint, trackers). ``best[tag]``: the best score so far of the :class:`KeepBest` that
    watches `tag` (-inf before the first validation), which the validation's line reports."""

    def __init__(self) -> None:
        self.pending: list[tuple] = []
        self.validations: dict[str, tuple[int, dict]] = {}
        self.best: dict[str, float] = {}

    def put(self, iteration: int, scalars: dict, tag: str = "train") -> None:
        """One metrics.jsonl record (and TensorBoard scalars ``tag/name``)."""
        self.pending.append(("scalars", iteration, scalars, tag))

    def put_board(self, iteration: int, scalars: dict[str, float], tag: str) -> None:
        """TensorBoard scalars ``tag/name`` alone (no metrics.jsonl record)."""
        self.pending.append(("board", iteration, scalars, tag))

    def put_image(self, iteration: int, image, tag: str) -> None:
        """A (H, W, 3) uint8 RGB image for TensorBoard under `tag`."""
        self.pending.append(("image", iteration, image, tag))

    def message(self, text: str) -> None:
        self.pending.append(("message", text))

    def progress(self, steps: int, postfix: dict[str, str]) -> None:
        """`steps` more iterations done; the progress bar's (or line's) fields."""
        self.pending.append(("progress", steps, postfix))

    def take(self) -> list[tuple]:
        """What is stored and not yet written, oldest first; the store forgets it."""
        taken, self.pending = self.pending, []
        return taken


class MetricsWriter(Hook):
    """Writes the store after every iteration's hooks (rank 0): metrics.jsonl, TensorBoard scalars, the
    progress bar (or one line per log interval off a terminal) and messages (seg.engine.logger.RunLogger)."""

    def __init__(self) -> None:
        self.logger: RunLogger | None = None

    def before_train(self, loop: TrainLoop) -> None:
        self.logger = RunLogger(loop.work_dir, loop.total, loop.iteration, enabled=loop.info.is_main)

    def write(self, loop: TrainLoop) -> None:
        if self.logger is None:
            return
        for kind, *args in loop.storage.take():
            if kind == "scalars":
                self.logger.log(*args)
            elif kind == "board":
                self.logger.board(*args)
            elif kind == "image":
                self.logger.image(*args)
            elif kind == "message":
                self.logger.message(*args)
            else:
                self.logger.progress(*args)

    def after_step(self, loop: TrainLoop) -> None:
        self.write(loop)

    def after_epoch(self, loop: TrainLoop) -> None:
        self.write(loop)

    def after_train(self, loop: TrainLoop) -> None:
        self.close(loop)

    def after_failure(self, loop: TrainLoop) -> None:
        self.close(loop)

    def close(self, loop: TrainLoop) -> None:
        self.write(loop)
        if self.logger is not None:
            self.logger.close()
            self.logger = None


class LRSchedule(Hook):
    """Steps the LR schedule after every iteration. `schedule` (a seg.engine.loop.Schedule factory) is
    called again by :meth:`restart` on resume, so that changed schedule keys take effect from there."""

    def __init__(self, schedule: Schedule, optimizer: torch.optim.Optimizer, train_cfg: dict, iters_per_epoch: int):
        self.schedule, self.optimizer, self.train_cfg, self.iters_per_epoch = \
            schedule, optimizer, train_cfg, iters_per_epoch
        self.scheduler: LRScheduler = schedule(optimizer, train_cfg, iters_per_epoch, 0)

    def restart(self, iteration: int) -> None:
        self.scheduler = self.schedule(self.optimizer, self.train_cfg, self.iters_per_epoch, iteration)

    def after_step(self, loop: TrainLoop) -> None:
        self.scheduler.step()


class Validation(Hook):
    """`validate(model) -> metrics` every `interval` iterations and after the last one (interval 0: after the
    last only), or after every epoch (`per_epoch`). Every rank calls `validate` (it scores its own shard and
    reduces) on rank 0's model; the numbers of :meth:`record` go to metrics.jsonl under `tag`, the full
    result to ``loop.storage.validations[tag]``, and a line shows the `shown` metrics."""

    def __init__(self, validate: Callable[[nn.Module], dict], interval: int = 0, per_epoch: bool = False,
                 tag: str = "val", shown: tuple[str, ...] = ("mIoU",)):
        self.validate, self.interval, self.per_epoch, self.tag, self.shown = \
            validate, interval, per_epoch, tag, shown

    def after_step(self, loop: TrainLoop) -> None:
        due = loop.iteration == loop.total or (self.interval > 0 and loop.iteration % self.interval == 0)
        if due and not self.per_epoch:
            self.run(loop)

    def after_epoch(self, loop: TrainLoop) -> None:
        if self.per_epoch:
            self.run(loop)

    def run(self, loop: TrainLoop) -> None:
        loop.check_state()  # what the guard saw stops the run before a validation of it is logged
        # without SyncBN every rank's running statistics differ: every rank scores rank 0's model
        broadcast_buffers(loop.model)
        metrics = self.validate(loop.model)
        record = self.record(loop, metrics)
        loop.storage.validations[self.tag] = (loop.iteration, metrics)
        loop.storage.put(loop.iteration, {k: v for k, v in record.items() if isinstance(v, (int, float))
                                          and k != "iteration"}, tag=self.tag)
        best = loop.storage.best.get(self.tag)
        note = "" if best is None else f" (best before: {best:.2f})" if math.isfinite(best) else " (first validation)"
        loop.storage.message(f"iter {loop.iteration} (epoch {loop.epoch + 1}): {self.tag} "
                             + " ".join(f"{k} {metrics[k]:.2f}" for k in self.shown) + note)

    def record(self, loop: TrainLoop, metrics: dict) -> dict:
        """What one validation logs; subclasses also keep it."""
        return metrics


class AfterValidation(Hook):
    """Base of the hooks that act once on each validation under `tag` (a :class:`Validation` before them),
    whether it ran after a step or after an epoch: :meth:`on_validation` gets its iteration and metrics."""

    tag = "val"
    seen: int | None = None  # the iteration of the last validation looked at

    def after_step(self, loop: TrainLoop) -> None:
        self.look(loop)

    def after_epoch(self, loop: TrainLoop) -> None:
        self.look(loop)

    def look(self, loop: TrainLoop) -> None:
        iteration, metrics = loop.storage.validations.get(self.tag, (None, {}))
        if iteration is None or iteration != loop.iteration or self.seen == iteration:
            return
        self.seen = iteration
        self.on_validation(loop, iteration, metrics)

    def on_validation(self, loop: TrainLoop, iteration: int, metrics: dict) -> None:
        """What the hook does with one validation's `metrics` (the base does nothing)."""


class KeepBest(AfterValidation):
    """checkpoints/best.pth holds the model (model-only, as model_final.pth: the periodic checkpoints are
    what resumes) at the highest ``metric`` of the validations under `tag` (a :class:`Validation` before this
    hook); checkpoints carry the best score as `state_key`, and so do best.pth's and the final model's meta."""

    def __init__(self, metric: str, tag: str = "val", state_key: str = "best"):
        self.metric, self.tag, self.state_key, self.best = metric, tag, state_key, -math.inf

    def before_train(self, loop: TrainLoop) -> None:
        loop.storage.best[self.tag] = self.best

    def on_validation(self, loop: TrainLoop, iteration: int, metrics: dict) -> None:
        if metrics[self.metric] > self.best:
            self.best = loop.storage.best[self.tag] = metrics[self.metric]
            loop.save_model(os.path.join(loop.work_dir, "checkpoints", "best.pth"), {self.state_key: self.best})

    def after_train(self, loop: TrainLoop) -> None:
        loop.meta[self.state_key] = self.best if math.isfinite(self.best) else None

    def state_dict(self) -> dict:
        return {self.state_key: self.best}

    def load_state_dict(self, checkpoint: dict) -> None:
        self.best = checkpoint.get(self.state_key, -math.inf)


class Checkpointer(Hook):
    """Full checkpoints checkpoints/iter_*.pth every ``train.ckpt_interval`` iterations, at the end and, for a
    run measured in epochs, at every epoch end, written after the other hooks of their iteration; the newest
    ``train.keep_checkpoints`` usable ones kept (unusable ones renamed ``*.unusable``); model_final.pth at the
    end (model-only, every rank's BN statistics made equal to rank 0's first, with ``loop.meta``).

    When a hook of an iteration whose checkpoint is due raises (a validation), that checkpoint is still
    written, by rank 0 alone, before the error goes on."""

    def __init__(self, interval: int, keep: int, per_epoch: bool):
        self.interval, self.keep, self.per_epoch = interval, keep, per_epoch
        # {periodic checkpoint: None if usable, else why not} as far as this job knows (pruning counts the usable)
        self.verified: dict[str, str | None] = {}

    def due(self, loop: TrainLoop) -> bool:
        epoch_end = self.per_epoch and loop.iteration % loop.iters_per_epoch == 0
        return loop.iteration == loop.total or epoch_end or (self.interval > 0 and loop.iteration % self.interval == 0)

    def after_step(self, loop: TrainLoop) -> None:
        if loop.iteration % loop.iters_per_epoch and self.due(loop):  # an epoch end saves after its epoch hooks
            self.save(loop)

    def after_epoch(self, loop: TrainLoop) -> None:
        if self.due(loop):
            self.save(loop)

    def save(self, loop: TrainLoop) -> None:
        """Collective: every rank contributes its RNG state; rank 0 writes; refused unless every parameter and
        buffer is finite."""
        loop.check_state()
        loop.last_ckpt = checkpoint_path(loop.work_dir, loop.iteration)
        save_training_state(loop.last_ckpt, loop.model, loop.optimizer, loop.scheduler, loop.scaler, loop.iteration,
                            loop.cfg, loop.info, run_id=loop.run_id, **loop.hook_states())
        self.prune(loop)

    def prune(self, loop: TrainLoop) -> None:
        """Rank 0: keep the newest usable periodic checkpoints and the one just written (see prune_checkpoints)."""
        if loop.info.is_main and loop.last_ckpt is not None:
            self.verified[loop.last_ckpt] = None
            for note in prune_checkpoints(loop.work_dir, self.keep, loop.last_ckpt, self.verified, loop.run_id):
                loop.storage.message(f"warning: {note}")

    def after_failure(self, loop: TrainLoop) -> None:
        """This iteration's checkpoint after one of its hooks raised: rank 0 alone (the other ranks may be
        waiting in a collective of the failed hook), with its own RNG state, only when its weights are
        finite; a failure here is reported and the hook's error goes on."""
        if not (loop.hook_failed and self.due(loop)) or not loop.info.is_main or (
                loop.checked != loop.iteration and nonfinite_entries(loop.model.state_dict())):
            return
        path = checkpoint_path(loop.work_dir, loop.iteration)
        try:
            save_training_state(path, loop.model, loop.optimizer, loop.scheduler, loop.scaler, loop.iteration,
                                loop.cfg, loop.info, collective=False, run_id=loop.run_id, **loop.hook_states())
        except Exception as e:  # the hook's error is the one to report
            loop.storage.message(f"warning: could not save {path} after the failure below: {e}")
            return
        loop.last_ckpt = path
        loop.storage.message(f"saved {path} before stopping on the failure below")
        self.prune(loop)

    def after_train(self, loop: TrainLoop) -> None:
        broadcast_buffers(loop.model)
        final = os.path.join(loop.work_dir, "model_final.pth")
        loop.save_model(final, {"skipped_batches": loop.skipped, **loop.meta})
        loop.storage.message(f"final model: {os.path.abspath(final)}")  # the run's last line: where its result is
