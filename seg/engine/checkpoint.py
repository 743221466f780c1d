"""Checkpoints that ``torch.load(weights_only=True)`` can read: tensors, numbers, strings, lists, dicts.

Layout in a work dir::

    checkpoints/iter_0001000.pth   full state, every `ckpt_interval` iterations (newest `keep` kept)
    checkpoints/best.pth           model-only, at the best validation score (seg.engine.loop.KeepBest)
    model_final.pth                model-only export: {"model", "config", "meta"}

Every file is written to a temporary name in the same folder and renamed, so a crash never leaves a
half-written file under the final name; a file truncated some other way is detected on load, reported
and passed over by :func:`find_resume_checkpoint`, as is one of another run (its ``run_id`` differs)
or one that holds a NaN/inf tensor (the training loop never writes such a file). Pruning counts only
checkpoints that load and verify, never deletes the one just written, and renames unusable ones to
``iter_*.pth.unusable`` (:func:`prune_checkpoints`).
"""
from __future__ import annotations

import glob
import math
import os
import random
import re
import warnings

import numpy as np
import torch
from torch import nn

from seg.atomic import atomic_open
from seg.config import ConfigError
from seg.errors import SegError, WorkDirError

from .distributed import DistInfo
from .workdir import free_name

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "checkpoint_path", "list_checkpoints",
           "find_resume_checkpoint", "prune_checkpoints", "export_model", "export_from_checkpoint", "get_rng_state",
           "set_rng_state", "gather_rng_states", "load_resume_checkpoint", "save_training_state",
           "restore_training_state", "nonfinite_entries", "scan_checkpoints", "check_same_model",
           "UNUSABLE_SUFFIX", "RESUME_FREE_KEYS"]

FULL_KEYS = ("model", "optimizer", "scheduler", "scaler", "iteration", "rng", "config")
_ITER_RE = re.compile(r"iter_(\d+)\.pth$")
UNUSABLE_SUFFIX = ".unusable"  # a periodic checkpoint that pruning found unusable is renamed to <name><this>
# model keys a resume may change: the initial weights, which the checkpoint's replace anyway
RESUME_FREE_KEYS = ("pretrained",)
# what only a run that got past its first checkpoint leaves, and starting it over would overwrite
_FINISHED_RUN_FILES = ("model_final.pth", os.path.join("checkpoints", "best.pth"))


class CheckpointError(SegError, RuntimeError):
    """A checkpoint is missing, truncated, corrupt or lacks required entries; the message names the file."""


def checkpoint_path(work_dir: str, iteration: int) -> str:
    return os.path.join(work_dir, "checkpoints", f"iter_{iteration:07d}.pth")


def save_checkpoint(state: dict, path: str) -> None:
    """torch.save `state` to `path` atomically (temporary file in the same folder, fsync, rename).

    A failed write (disk full, read-only folder) raises CheckpointError naming `path`; the file that was
    there before stays as it was.
    """
    try:
        with atomic_open(path, "wb") as f:
            torch.save(state, f)
    except (OSError, RuntimeError) as e:  # torch reports a full disk as RuntimeError("... unexpected pos ...")
        raise CheckpointError(f"cannot write checkpoint {path}: {e}") from e


def load_checkpoint(path: str, required: tuple[str, ...] = ("model",), map_location="cpu") -> dict:
    """Load a checkpoint with weights_only=True; raise CheckpointError naming `path` if it is unusable."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, bad pickle, disallowed global: all mean "unusable file"
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(ckpt).__name__}, expected a dict")
    missing = [k for k in required if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing} (has {sorted(ckpt)})")
    return ckpt


def list_checkpoints(work_dir: str) -> list[tuple[int, str]]:
    """Periodic checkpoints in `work_dir` as (iteration, path), newest first."""
    found = []
    for path in glob.glob(os.path.join(work_dir, "checkpoints", "iter_*.pth")):
        m = _ITER_RE.search(path)
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found, reverse=True)


def nonfinite_entries(state: dict) -> list[str]:
    """Names of the floating-point tensors of a state_dict that hold a NaN or an inf."""
    return [name for name, t in state.items()
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all()]


def load_full_checkpoint(path: str, run_id: str | None = None) -> dict:
    """A full training checkpoint that is complete, of run `run_id` (None: any run) and finite throughout;
    CheckpointError naming `path` otherwise."""
    ckpt = load_checkpoint(path, required=FULL_KEYS)
    if run_id is not None and ckpt.get("run_id") != run_id:
        raise CheckpointError(f"checkpoint {path} belongs to run {ckpt.get('run_id')}, not to this work dir's "
                              f"run {run_id}")
    bad = nonfinite_entries(ckpt["model"])
    if bad:
        raise CheckpointError(f"checkpoint {path} holds {len(bad)} non-finite tensor(s), e.g. {bad[:3]}")
    return ckpt


def scan_checkpoints(work_dir: str, run_id: str | None = None) -> tuple[tuple[str, dict] | None, dict[str, str]]:
    """(newest periodic checkpoint in `work_dir` that loads, belongs to run `run_id` (None: any) and is finite,
    as (path, checkpoint), or None; {path: why unusable} of the newer ones passed over)."""
    rejected: dict[str, str] = {}
    for _, path in list_checkpoints(work_dir):
        try:
            return (path, load_full_checkpoint(path, run_id)), rejected
        except CheckpointError as e:
            rejected[path] = str(e)
    return None, rejected


def find_resume_checkpoint(work_dir: str, run_id: str | None = None) -> tuple[str, dict] | None:
    """Newest periodic checkpoint in `work_dir` that loads, belongs to run `run_id` (None: any) and is
    finite; the others are reported (a warning each) and passed over.

    Returns (path, checkpoint) or None when there is none to resume from.
    """
    return _scan_reporting(work_dir, run_id)[0]


def _scan_reporting(work_dir: str, run_id: str | None) -> tuple[tuple[str, dict] | None, dict[str, str]]:
    found, rejected = scan_checkpoints(work_dir, run_id)
    for reason in rejected.values():
        warnings.warn(f"--resume auto: skipping {reason}", stacklevel=3)
    return found, rejected


def load_resume_checkpoint(spec: str, work_dir: str, run_id: str | None = None
                           ) -> tuple[tuple[str, dict] | None, dict[str, str]]:
    """((path, full checkpoint) to resume from, {path: why unusable} of the periodic checkpoints passed over).

    spec "auto" takes the newest usable periodic checkpoint of run `run_id` in `work_dir`; with none, the
    first part is None (start from scratch) only when that loses nothing: a work dir holding an export,
    best.pth or unusable checkpoints is a WorkDirError naming them (one whose run was killed before its
    first checkpoint is started over). Any other spec is a checkpoint path of any run (CheckpointError if
    unusable).
    """
    if spec != "auto":
        return (spec, load_full_checkpoint(spec)), {}
    found, rejected = _scan_reporting(work_dir, run_id)
    if found is None:
        _refuse_starting_over(work_dir, rejected)
    return found, rejected


def _refuse_starting_over(work_dir: str, rejected: dict[str, str]) -> None:
    """WorkDirError when `work_dir` holds more than a run killed before its first checkpoint, whose records a
    new start recomputes: an export, best.pth, or checkpoints (unusable ones included)."""
    held = [name for name in _FINISHED_RUN_FILES if os.path.isfile(os.path.join(work_dir, name))]
    aside = [os.path.relpath(path, work_dir)
             for path in sorted(glob.glob(os.path.join(work_dir, "checkpoints", f"*{UNUSABLE_SUFFIX}")))]
    if not (held or rejected or aside):
        return
    records = ["metrics.jsonl"] if os.path.isfile(os.path.join(work_dir, "metrics.jsonl")) else []
    why = list(rejected.values()) or ["no periodic checkpoint (checkpoints/iter_*.pth)"]
    raise WorkDirError(f"--resume auto: nothing to resume from in {work_dir} ({'; '.join(why)}), but it holds a run "
                       f"({', '.join(held + records + aside or ['unusable checkpoints'])}) that starting over would "
                       "overwrite: pass --overwrite to move it aside and start afresh, or --resume PATH to continue "
                       "from a checkpoint")


def check_same_model(path: str, saved: dict, live: dict) -> None:
    """ConfigError naming every model key (but RESUME_FREE_KEYS) whose value differs between the model section
    `saved` with checkpoint `path` and this run's `live` one; keys the checkpoint's config lacks (written
    before the key existed) are not compared."""
    changed = [f"model.{key} is {saved[key]!r} there but {value!r} here" for key, value in live.items()
               if key not in RESUME_FREE_KEYS and key in saved and saved[key] != value]
    if changed:
        raise ConfigError(f"cannot resume from {path}: {'; '.join(changed)}. A run keeps its model; to train "
                          f"these settings from its weights start a new run initialised from it: --opts "
                          f"model.pretrained={path} with another --work-dir (or --overwrite)")


def save_training_state(path: str, model: nn.Module, optimizer, scheduler, scaler, iteration: int, config: dict,
                        info: DistInfo, collective: bool = True, **extra) -> None:
    """Full checkpoint at `path`: FULL_KEYS (with every rank's RNG state) plus the caller's `extra` entries.

    Collective under DDP (every rank contributes its RNG state); rank 0 writes. collective=False: rank 0
    writes its own RNG state alone (every rank of a resume then takes it), so that it can save while the
    other ranks are stuck. `model` is the bare module, not its DDP wrapper, so the keys carry no "module."
    prefix.
    """
    rng = gather_rng_states(info) if collective else [get_rng_state()]
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict(), "iteration": iteration, "rng": rng, "config": config, **extra}
    if info.is_main:
        save_checkpoint(state, path)


def restore_training_state(path: str, ckpt: dict, model: nn.Module, optimizer, scaler, info: DistInfo) -> int:
    """Load full checkpoint `ckpt` (read from `path`)'s model/optimizer/scaler states and this rank's RNG state
    (rank 0's when the world size changed); returns the checkpoint's iteration.

    The optimizer keeps the hyper-parameters of the live config (momentum, weight decay, ...): the
    checkpoint supplies its per-parameter state (momentum buffers). The caller rebuilds the LR schedule
    from the live config at the returned iteration (build_scheduler(..., start=iteration)), so a changed
    train.lr or train.iterations takes effect on resume instead of being silently replaced.
    """
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:  # torch lists every missing/unexpected/mis-shaped tensor on many lines
        raise CheckpointError(f"checkpoint {path} does not fit this model: {_headline(e)}") from e
    live = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    optimizer.load_state_dict(ckpt["optimizer"])
    for group, own in zip(optimizer.param_groups, live):
        group.update(own)
    if ckpt["scaler"]:  # empty: saved without fp16 loss scaling; a run resumed with train.amp=fp16 starts afresh
        scaler.load_state_dict(ckpt["scaler"])
    rng = ckpt["rng"]
    set_rng_state(rng[info.rank] if len(rng) == info.world_size else rng[0])
    return ckpt["iteration"]


def prune_checkpoints(work_dir: str, keep: int, written: str, verified: dict[str, str | None],
                      run_id: str | None) -> list[str]:
    """Keep the newest `keep` usable periodic checkpoints and `written` (the one just written, kept whatever
    the count); delete older ones; rename unusable ones met on the way to ``<path>.unusable``, uncounted.

    verified: {path: None if usable, else why} of the checkpoints already known (written or loaded by this
    job); a checkpoint not in it is loaded once (run `run_id`, finite) and the answer added. keep <= 0 keeps
    everything. Returns a message for each file moved aside.
    """
    notes: list[str] = []
    if keep <= 0:
        return notes
    kept = 0
    for _, path in list_checkpoints(work_dir):
        if path != written and kept >= keep:
            os.remove(path)
            verified.pop(path, None)
            continue
        if path not in verified:
            verified[path] = _unusable_reason(path, run_id)
        if verified[path] is None:
            kept += 1
            continue
        aside = free_name(path + UNUSABLE_SUFFIX)
        os.replace(path, aside)
        notes.append(f"{verified.pop(path)}: moved it aside to {aside}")
    return notes


def _unusable_reason(path: str, run_id: str | None) -> str | None:
    try:
        load_full_checkpoint(path, run_id)
        return None
    except CheckpointError as e:
        return str(e)


def _headline(error: Exception) -> str:
    """The first two lines of `error`'s message as one (torch's state-dict errors: what, then the first key)."""
    lines = str(error).strip().splitlines()
    return " ".join(line.strip() for line in lines[:2]) if lines else type(error).__name__


def export_model(model_state: dict, config: dict, path: str, meta: dict | None = None) -> None:
    """Model-only file for evaluation and sharing: {"model": state_dict, "config": cfg, "meta": {...}}."""
    save_checkpoint({"model": model_state, "config": config, "meta": dict(meta or {})}, path)


def export_from_checkpoint(src: str, dst: str) -> None:
    """Model-only export of a full training checkpoint (e.g. checkpoints/iter_*.pth) for sharing."""
    ckpt = load_checkpoint(src, required=("model", "config"))
    best = ckpt.get("best_miou")
    meta = {"source": os.path.basename(src), "iteration": ckpt.get("iteration"),
            "best_miou": best if best is not None and math.isfinite(best) else None}
    export_model(ckpt["model"], ckpt["config"], dst, meta)


def get_rng_state() -> dict:
    """RNG states of torch (CPU, CUDA), numpy and python, as tensors/lists/numbers (weights_only-safe)."""
    # legacy=True is numpy's default, spelt out: the stubs type the bare call as the dict form
    np_state = np.random.get_state(legacy=True)
    if isinstance(np_state, dict):  # numpy returns the dict form only for a global generator other than MT19937
        raise CheckpointError(f"numpy's global RNG is {np_state.get('bit_generator')}, not MT19937; "
                              "its state cannot be saved")
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`get_rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def gather_rng_states(info: DistInfo) -> list[dict]:
    """Every rank's RNG state (rank order), so a resumed DDP run continues each rank's own stream.

    Collective under DDP: every rank must call it.
    """
    state = get_rng_state()
    if not info.distributed:
        return [state]
    states: list[dict] = [{} for _ in range(info.world_size)]  # each slot replaced by one rank's state
    torch.distributed.all_gather_object(states, state)
    return states


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description="Write a model-only export of a full training checkpoint: "
                                                 "python -m seg.engine.checkpoint SRC DST")
    parser.add_argument("src")
    parser.add_argument("dst")
    args = parser.parse_args()
    export_from_checkpoint(args.src, args.dst)
    print(f"wrote {args.dst}")
