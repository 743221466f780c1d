"""Nothing lost in a work dir (issue 25): pruning counts only checkpoints that load and verify and never
deletes the one just written; the work-dir lock ends with the job's own process, not with the data-loader
workers it forked, and a pid it names is one that is alive. No training: tiny hand-made checkpoints."""
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

import seg.engine.workdir as workdir
from seg.engine.checkpoint import FULL_KEYS, checkpoint_path, list_checkpoints, prune_checkpoints, save_checkpoint
from seg.engine.workdir import LOCK_FILE, WorkDirLock
from seg.errors import WorkDirError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def full_checkpoint(work_dir, iteration, run_id="run-a", value=1.0):
    """A complete (FULL_KEYS) checkpoint of run `run_id` at `iteration`; returns its path."""
    state = {key: {} for key in FULL_KEYS}
    state.update(model={"w": torch.full((2,), value)}, iteration=iteration, rng=[], run_id=run_id)
    path = checkpoint_path(str(work_dir), iteration)
    save_checkpoint(state, path)
    return path


def garbage(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"PK\x03\x04 cut short")
    return path


def iterations(work_dir):
    return [it for it, _ in list_checkpoints(str(work_dir))]


def test_damaged_newer_checkpoints_are_moved_aside_not_counted(tmp_path):
    """keep=1 after a resume from 8 that wrote 10: the truncated 12 and 20 once outranked 10 and deleted it."""
    for it in (6, 8, 10):
        full_checkpoint(tmp_path, it)
    damaged = {it: garbage(checkpoint_path(str(tmp_path), it)) for it in (12, 20)}
    written = checkpoint_path(str(tmp_path), 10)
    verified = {written: None, checkpoint_path(str(tmp_path), 8): None}
    notes = prune_checkpoints(str(tmp_path), 1, written, verified, "run-a")
    assert iterations(tmp_path) == [10]
    for it, path in damaged.items():
        assert open(path + ".unusable", "rb").read() == b"PK\x03\x04 cut short", it
    assert len(notes) == 2 and all("is truncated or corrupt" in n and "moved it aside to" in n for n in notes)


def test_the_checkpoint_just_written_is_kept_whatever_the_newer_ones(tmp_path):
    """A valid newer checkpoint (a resume from an older path) counts, but never costs the one just written."""
    full_checkpoint(tmp_path, 4)
    written = full_checkpoint(tmp_path, 6)
    full_checkpoint(tmp_path, 8)
    notes = prune_checkpoints(str(tmp_path), 1, written, {written: None}, "run-a")
    assert iterations(tmp_path) == [8, 6] and notes == []


def test_checkpoints_of_another_run_or_non_finite_do_not_count(tmp_path):
    written = full_checkpoint(tmp_path, 2)
    full_checkpoint(tmp_path, 4)  # usable: counted, so 2 is the only other one kept
    full_checkpoint(tmp_path, 6, value=float("nan"))
    full_checkpoint(tmp_path, 8, run_id="run-b")
    notes = prune_checkpoints(str(tmp_path), 2, written, {written: None}, "run-a")
    assert iterations(tmp_path) == [4, 2]
    assert os.path.isfile(checkpoint_path(str(tmp_path), 6) + ".unusable")
    assert os.path.isfile(checkpoint_path(str(tmp_path), 8) + ".unusable")
    assert any("non-finite" in n for n in notes) and any("belongs to run run-b" in n for n in notes)


def test_an_unusable_name_taken_already_gets_a_new_one(tmp_path):
    written = full_checkpoint(tmp_path, 2)
    first = garbage(checkpoint_path(str(tmp_path), 4) + ".unusable")
    garbage(checkpoint_path(str(tmp_path), 4))
    prune_checkpoints(str(tmp_path), 2, written, {written: None}, "run-a")
    assert os.path.isfile(first) and os.path.isfile(first + "-1")


def test_the_known_answers_spare_loading_again(tmp_path, monkeypatch):
    written = full_checkpoint(tmp_path, 4)
    older = full_checkpoint(tmp_path, 2)
    loaded = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loaded.append(a) or pytest.fail("loaded again"))
    prune_checkpoints(str(tmp_path), 2, written, {written: None, older: None}, "run-a")
    assert iterations(tmp_path) == [4, 2] and loaded == []


# ---------------------------------------------------------------- the lock
HOLDER = """
import multiprocessing, sys, time
from seg.engine.workdir import WorkDirLock
lock = WorkDirLock(sys.argv[1])
worker = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))  # as a data-loader worker
worker.start()
print(worker.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.slow  # a second Python importing torch: several seconds on a loaded machine
def test_lock_ends_with_the_killed_job_though_its_forked_worker_lives(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO)
    job = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
    worker = None
    try:
        worker = int(job.stdout.readline())
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=30)
        os.kill(worker, 0)  # the worker outlives its job, as after kill -9 of a training run
        start = time.monotonic()
        lock = WorkDirLock(str(tmp_path))
        assert time.monotonic() - start < 1.0
        lock.release()
    finally:
        job.kill()
        job.stdout.close()
        if worker is not None:
            os.kill(worker, signal.SIGKILL)


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def hold_with_pid(work_dir, pid):
    """The lock file flocked by another open file (another process's inherited copy), naming `pid`."""
    f = open(os.path.join(work_dir, LOCK_FILE), "w")
    f.write(str(pid))
    f.flush()
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return f


def test_lock_named_for_a_dead_pid_is_waited_for_not_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(workdir, "LOCK_GRACE_S", 10.0, raising=False)
    leftover = hold_with_pid(tmp_path, dead_pid())
    threading.Timer(0.3, leftover.close).start()  # the leftover process exits
    lock = WorkDirLock(str(tmp_path))
    assert open(tmp_path / LOCK_FILE).read() == str(os.getpid())
    lock.release()


def test_lock_still_held_after_its_job_died_names_no_dead_holder(tmp_path, monkeypatch):
    monkeypatch.setattr(workdir, "LOCK_GRACE_S", 0.3, raising=False)
    pid = dead_pid()
    leftover = hold_with_pid(tmp_path, pid)
    try:
        with pytest.raises(WorkDirError, match=rf"still held 0.3 s after the job that took it \(pid {pid}\) ended"):
            WorkDirLock(str(tmp_path))
    finally:
        leftover.close()
