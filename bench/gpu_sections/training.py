"""Section "train_cli": the training path a user runs, tools/train.py under torchrun, including a kill after the
first checkpoint and ``--resume auto``; and the process-tree handling that kill needs."""
from __future__ import annotations

import glob
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time

from seg.data.demo import generate_demo_dataset

from .report import Run, SectionResult, Table, holds, within

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TRAIN_CLI_SIZES = {"gpu": dict(data_size=(512, 1024), data_images=16, train_crop=512, train_batch=8, train_iters=20,
                               train_amps=("bf16", "fp16")),
                   "dry": dict(data_size=(64, 128), data_images=4, train_crop=64, train_batch=2, train_iters=4,
                               train_amps=("fp16",))}


def _torchrun(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
            os.path.join(ROOT, "tools", "train.py"), *args]


def _descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (Linux /proc): torchrun starts each worker in a session of its own."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL `proc` and all its descendants (as a node failure would), and wait until they are gone."""
    family = [proc.pid] + _descendants(proc.pid)
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    for pid in family[1:]:  # orphans are reaped by init; wait until their locks and files are released
        for _ in range(200):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        break
            except OSError:
                break
            time.sleep(0.05)


def _run_logged(cmd: list[str], log_path: str, timeout: float, kill_when=None) -> tuple[int, str, bool]:
    """Run `cmd` with output to `log_path`; with `kill_when` (a callable polled every 50 ms) SIGKILL it and
    every process it started as soon as that returns True. Returns (exit code, output, killed)."""
    killed = False
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if time.monotonic() > deadline or (kill_when is not None and kill_when()):
                kill_tree(proc)
                killed = True
                break
            time.sleep(0.05)
    with open(log_path) as f:
        return proc.returncode, f.read(), killed


def _train_opts(data_root: str, sizes: dict, device, amp: str, iters: int) -> list[str]:
    return ["--opts", "model.pretrained=null", f"data.root={data_root}", "data.train_sets=[fine/train]",
            f"data.crop_size={sizes['train_crop']}", f"train.batch_size={sizes['train_batch']}",
            f"train.iterations={iters}", f"train.amp={amp}", "train.log_interval=5",
            f"train.ckpt_interval={iters // 2}",
            "train.val_interval=0", f"data.num_workers={min(8, os.cpu_count() or 1) if device.type == 'cuda' else 0}",
            f"train.device={device.type}", "train.sync_bn=true"]


def _last_metrics(work_dir: str) -> dict:
    rows = []
    with open(os.path.join(work_dir, "metrics.jsonl")) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    train_rows = [r for r in rows if r.get("tag") == "train" and "loss" in r]
    return {"rows": train_rows, "last": train_rows[-1] if train_rows else {}}


def train_cli(run: Run) -> SectionResult:
    """tools/train.py under torchrun --nproc_per_node 1 (NCCL, DDP, SyncBatchNorm on a GPU): each amp in turn;
    the fp16 run is killed after its first checkpoint and continued with --resume auto."""
    sizes, device, tmp = run.sizes(TRAIN_CLI_SIZES), run.device, run.tmp
    h, w = sizes["data_size"]
    data_root = os.path.join(tmp, "data")
    generate_demo_dataset(data_root, train=sizes["data_images"], val=2, height=h, width=w, seed=0,
                          workers=min(8, os.cpu_count() or 1))
    config = ("configs/cityscapes/deeplabv3plus_r50_partial_896.yaml" if device.type == "cuda"
              else "configs/demo/deeplabv3plus_r18_partial.yaml")
    iters, checks, rows, timeout = sizes["train_iters"], [], [], 240
    expect_backend = "nccl" if device.type == "cuda" else "gloo"
    norm = "SyncBatchNorm" if device.type == "cuda" else "BatchNorm2d"
    for amp in sizes["train_amps"]:  # the last one is killed after its first checkpoint and resumed
        work = os.path.join(tmp, f"train_{amp}")
        args = [config, "--work-dir", work, *_train_opts(data_root, sizes, device, amp, iters)]
        ckpts = os.path.join(work, "checkpoints", "iter_*.pth")
        kill = (lambda pattern=ckpts: bool(glob.glob(pattern))) if amp == "fp16" else None
        t0 = time.perf_counter()
        code, out, killed = _run_logged(_torchrun(args), os.path.join(tmp, f"train_{amp}.log"), timeout, kill)
        wall = time.perf_counter() - t0
        line = re.search(r"distributed: (.*)", out)
        checks.append(holds(f"{amp}: ran under {expect_backend} with {norm}",
                            bool(line and expect_backend in line.group(1) and norm in line.group(1))))
        if amp == "fp16":
            checks.append(holds("fp16: killed after its first checkpoint", killed))
            code, more, _ = _run_logged(_torchrun(args + ["--resume", "auto"]),
                                        os.path.join(tmp, "train_fp16_resume.log"), timeout)
            resumed = re.search(r"resumed from \S+ at iteration (\d+)", more)
            checks.append(holds("fp16: --resume auto continued from the killed run's checkpoint",
                                bool(resumed and 0 < int(resumed.group(1)) < iters)))
            out += more
        checks.append(within(f"{amp}: exit code", code, 0))
        metrics = _last_metrics(work) if os.path.exists(os.path.join(work, "metrics.jsonl")) else {"rows": [],
                                                                                                     "last": {}}
        last = metrics["last"]
        loss = last.get("loss", float("nan"))
        checks.append(holds(f"{amp}: final training loss is finite", math.isfinite(loss)))
        checks.append(holds(f"{amp}: model_final.pth written", os.path.exists(os.path.join(work, "model_final.pth"))))
        img_s = [r.get("img_s") for r in metrics["rows"][1:]]
        rows.append([amp, last.get("iter"), loss,
                     statistics.median([v for v in img_s if v]) if any(img_s) else None, wall])
        if code != 0:
            print(out[-3000:], file=sys.stderr)
    table = Table(f"tools/train.py under torchrun --nproc_per_node 1, {config}, crop {sizes['train_crop']}, batch "
                  f"{sizes['train_batch']}, {iters} iterations on generated {h}x{w} data (fp16 includes the kill and "
                  "the resumed run)", ["amp", "last iteration", "last loss", "img/s (median of log windows after the "
                                       "first)", "wall s"], rows)
    return SectionResult("train_cli", checks=checks, tables=[table])
