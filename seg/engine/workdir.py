"""Work-dir ownership: one running job per work dir (a lock), one run per work dir (a run id).

A work dir "holds a run" once any of RUN_MARKERS exists in it. A fresh start (no --resume) in such a
folder is refused, unless `overwrite` moves the old run aside to ``<work dir>.old-<time>``, so nothing
of it is lost. Every run gets an id, kept in ``run.json`` and written into each of its checkpoints;
``--resume auto`` takes only checkpoints of the work dir's own run.
"""
from __future__ import annotations

import fcntl
import glob
import json
import os
import time
import uuid
import weakref

from seg.atomic import TMP_MARK, atomic_write_json
from seg.errors import WorkDirError

from .distributed import DistInfo, broadcast_object

__all__ = ["RUN_FILE", "LOCK_FILE", "RUN_MARKERS", "WorkDirLock", "run_markers", "move_aside", "read_run_id",
           "write_run_id", "new_run_id", "remove_stale_temporaries", "claim_work_dir", "claim_on_all_ranks",
           "adopt_run", "free_name", "LOCK_GRACE_S"]

RUN_FILE = "run.json"
LOCK_FILE = ".lock"
RUN_MARKERS = ("config.yaml", "metrics.jsonl", "model_final.pth", "checkpoints", RUN_FILE)


class WorkDirLock:
    """An exclusive, non-blocking flock on ``<work dir>/.lock`` held until `release` (or process exit, so a
    killed job never leaves a stale lock); the file names the holder's pid for the error message.

    A forked child (a data-loader worker) closes its inherited copy of the lock file at once, so the lock
    ends with the job's own process, not with its last worker. A lock still held while the pid it names is
    dead (some other inheritor of the file) is waited for up to LOCK_GRACE_S seconds, then reported as such.
    """

    def __init__(self, work_dir: str):
        self.path = os.path.join(work_dir, LOCK_FILE)
        try:
            os.makedirs(work_dir, exist_ok=True)
            self.file = open(self.path, "a+")
        except OSError as e:
            raise WorkDirError(f"cannot use work dir {work_dir}: {e.strerror or e}") from e
        deadline = time.monotonic() + LOCK_GRACE_S
        while not self._try_lock():
            holder = self._holder()
            if holder is not None and _alive(holder):
                self.file.close()
                raise WorkDirError(f"work dir {work_dir} is in use by another job (pid {holder}, lock {self.path}); "
                                   "wait for it to end or choose another --work-dir")
            if time.monotonic() > deadline:
                self.file.close()
                raise WorkDirError(f"work dir {work_dir}: its lock {self.path} is still held {LOCK_GRACE_S:g} s after "
                                   f"the job that took it (pid {holder or 'unknown'}) ended, by a process it started "
                                   "(e.g. `fuser` on the lock names it); end that process, or choose another "
                                   "--work-dir")
            time.sleep(0.1)
        self.file.seek(0)
        self.file.truncate()
        self.file.write(str(os.getpid()))
        self.file.flush()
        _HELD.add(self)

    def _try_lock(self) -> bool:
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _holder(self) -> int | None:
        self.file.seek(0)
        text = self.file.read().strip()
        return int(text) if text.isdigit() else None

    def release(self) -> None:
        _HELD.discard(self)
        if not self.file.closed:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()


LOCK_GRACE_S = 15.0  # a dead job's forked children (data-loader workers poll their parent every 5 s) exit by then
_HELD: weakref.WeakSet[WorkDirLock] = weakref.WeakSet()  # the locks this process holds


def _close_inherited_locks() -> None:
    # closing (not LOCK_UN, which would release the parent's lock too) drops the child's share of the flock
    for lock in list(_HELD):
        lock.file.close()
    _HELD.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def free_name(path: str) -> str:
    """`path`, or `path`-1, -2, ... : the first name that does not exist yet."""
    name, n = path, 1
    while os.path.exists(name):
        name, n = f"{path}-{n}", n + 1
    return name


def run_markers(work_dir: str) -> list[str]:
    """The RUN_MARKERS present in `work_dir` (an empty checkpoints/ folder does not count)."""
    found = []
    for name in RUN_MARKERS:
        path = os.path.join(work_dir, name)
        if os.path.isfile(path) or (os.path.isdir(path) and os.listdir(path)):
            found.append(name)
    return found


def move_aside(work_dir: str) -> str:
    """Move everything in `work_dir` but the lock into a new sibling ``<work dir>.old-<time>``; returns it."""
    dest = free_name(f"{os.path.abspath(work_dir)}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(dest)
    for name in os.listdir(work_dir):
        if name != LOCK_FILE:
            os.replace(os.path.join(work_dir, name), os.path.join(dest, name))
    return dest


def read_run_id(work_dir: str) -> str | None:
    """The run id of `work_dir` (None when it has no run.json); WorkDirError if run.json is unreadable."""
    path = os.path.join(work_dir, RUN_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return str(json.load(f)["run_id"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise WorkDirError(f"{path} is unreadable ({type(e).__name__}: {e}); move the work dir aside with "
                           "--overwrite or choose another --work-dir") from e


def write_run_id(work_dir: str, run_id: str) -> None:
    atomic_write_json({"run_id": run_id, "started": time.strftime("%Y-%m-%d %H:%M:%S")},
                      os.path.join(work_dir, RUN_FILE))


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def remove_stale_temporaries(work_dir: str) -> list[str]:
    """Delete temporary files that a killed writer left (``*.tmp<pid>``, up to a checkpoint's size each).
    Only safe while holding the work dir's lock: then no live writer owns them."""
    pattern = f"*{TMP_MARK}[0-9]*"
    stale = glob.glob(os.path.join(work_dir, pattern)) + glob.glob(os.path.join(work_dir, "checkpoints", pattern))
    for path in stale:
        os.remove(path)
    return stale


def claim_work_dir(work_dir: str, resume: str | None, overwrite: bool) -> tuple[WorkDirLock, str | None, list[str]]:
    """Lock `work_dir` and settle whose run it is; returns (lock, run id, messages for the user).

    resume None: a fresh run, refused in a folder that holds one unless `overwrite` (then moved aside).
    resume "auto" or a path: continue the folder's run (run id None for a folder without run.json,
    which the caller fills in from the checkpoint it resumes).
    """
    lock = WorkDirLock(work_dir)
    try:
        notes = [f"removed stale temporary file {p}" for p in remove_stale_temporaries(work_dir)]
        found = run_markers(work_dir)
        if resume is not None and not overwrite:
            return lock, read_run_id(work_dir), notes
        if found and not overwrite:
            raise WorkDirError(f"work dir {work_dir} already holds a run ({', '.join(found)}); continue it with "
                               "--resume auto, choose another --work-dir, or pass --overwrite to move it aside")
        if found:
            notes.append(f"--overwrite: moved the previous run in {work_dir} to {move_aside(work_dir)}")
        return lock, None, notes
    except BaseException:
        lock.release()
        raise


def claim_on_all_ranks(work_dir: str, resume: str | None, overwrite: bool,
                       info: DistInfo) -> tuple[WorkDirLock | None, str | None]:
    """:func:`claim_work_dir` on rank 0 (which keeps the lock); every rank gets the run id, or the same
    WorkDirError. Collective under DDP."""
    lock, answer = None, None
    if info.is_main:
        try:
            lock, run_id, notes = claim_work_dir(work_dir, resume, overwrite)
            answer = {"run_id": run_id}
            for note in notes:
                print(note, flush=True)
        except WorkDirError as e:
            answer = {"error": str(e)}
    answer = broadcast_object(answer)
    if "error" in answer:
        raise WorkDirError(answer["error"])
    return lock, answer["run_id"]


def adopt_run(work_dir: str, run_id: str | None, path: str, ckpt_run: str | None) -> str:
    """The run id to continue when resuming from checkpoint `path` of run `ckpt_run` in `work_dir` (whose
    run is `run_id`, None when it has none): a checkpoint of another run than the work dir's is refused."""
    if run_id is not None and ckpt_run is not None and ckpt_run != run_id:
        raise WorkDirError(f"{path} belongs to run {ckpt_run}, but work dir {work_dir} holds run {run_id}; resume "
                           "into the checkpoint's own work dir, or pass --overwrite to move this one's run aside")
    return run_id or ckpt_run or new_run_id()
