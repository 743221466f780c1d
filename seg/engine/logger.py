"""Rank-0 run logging: a tqdm bar with ETA on a terminal (else one plain line per log interval), TensorBoard
scalars and a JSON-lines metrics file.

Every method is a no-op on other ranks, so the training loop can call them unconditionally.
"""
from __future__ import annotations

import json
import math
import os
import time
import warnings

from tqdm import tqdm

from seg.atomic import atomic_open, naming_write_errors
from seg.progress import on_terminal

__all__ = ["RunLogger"]


class RunLogger:
    """Writes `metrics.jsonl` and TensorBoard events (`tb/`) in `work_dir` and drives the progress bar.

    On resume from iteration `start`, records of later iterations (left by the interrupted run) are
    dropped from metrics.jsonl, so the file reads like one uninterrupted run; a line that a kill cut short
    is dropped with a warning. Each record is appended with one write, so at most the last line can tear.
    """

    def __init__(self, work_dir: str, total: int, start: int = 0, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        os.makedirs(work_dir, exist_ok=True)
        self.metrics_path = os.path.join(work_dir, "metrics.jsonl")
        self._truncate_after(start)
        from torch.utils.tensorboard import SummaryWriter  # imported lazily: slow, rank 0 only
        self.tb = SummaryWriter(os.path.join(work_dir, "tb"), purge_step=start if start else None)
        self.total, self.done, self.started = total, start, time.perf_counter()
        self.first = start
        self.bar = tqdm(total=total, initial=start, desc="train", dynamic_ncols=True, smoothing=0.05) \
            if on_terminal() else None

    def _truncate_after(self, start: int) -> None:
        if not os.path.exists(self.metrics_path):
            return
        kept = []
        with open(self.metrics_path) as f:
            for number, line in enumerate(f, 1):
                try:
                    record = json.loads(line) if line.strip() else None
                except ValueError:
                    warnings.warn(f"{self.metrics_path}: dropping unreadable line {number} (cut short by a kill?): "
                                  f"{line[:60]!r}", stacklevel=3)
                    continue
                if record is not None and record.get("iter", 0) <= start:
                    kept.append(line if line.endswith("\n") else line + "\n")
        with atomic_open(self.metrics_path) as f:  # a kill now leaves the old file, not a half-written one
            f.writelines(kept)

    def log(self, iteration: int, scalars: dict[str, float], tag: str = "train") -> None:
        """Append one record {"iter", "tag", "time", **scalars} and the TensorBoard scalars `tag/name`."""
        if not self.enabled:
            return
        clean = {k: v if v is None or (isinstance(v, (int, float)) and math.isfinite(v)) else str(v)
                 for k, v in scalars.items()}
        with naming_write_errors(self.metrics_path), open(self.metrics_path, "a") as f:  # full disk: name the file
            f.write(json.dumps({"iter": iteration, "tag": tag, "time": round(time.time(), 3), **clean}) + "\n")
        self.board(iteration, {k: v for k, v in clean.items() if isinstance(v, (int, float))}, tag)

    def board(self, iteration: int, scalars: dict[str, float], tag: str) -> None:
        """TensorBoard scalars `tag/name` alone."""
        if self.enabled:
            for name, value in scalars.items():
                self.tb.add_scalar(f"{tag}/{name}", value, iteration)

    def image(self, iteration: int, image, tag: str) -> None:
        """A (H, W, 3) uint8 RGB image in TensorBoard under `tag`."""
        if self.enabled:
            self.tb.add_image(tag, image, iteration, dataformats="HWC")

    def progress(self, steps: int, postfix: dict[str, str]) -> None:
        """`steps` more iterations done; the bar's postfix, or off a terminal one line
        ``train <done>/<total> <key>=<value> ... eta <h:mm:ss>``."""
        if not self.enabled:
            return
        self.done += steps
        if self.bar is not None:
            self.bar.update(steps)
            self.bar.set_postfix(postfix, refresh=False)
            return
        elapsed = time.perf_counter() - self.started
        left = elapsed / max(self.done - self.first, 1) * (self.total - self.done)
        fields = " ".join(f"{k}={v}" for k, v in postfix.items())
        print(f"train {self.done}/{self.total} {fields} eta {tqdm.format_interval(left)}", flush=True)

    def message(self, text: str) -> None:
        if self.enabled:
            if self.bar is not None:
                self.bar.write(text)
            else:
                print(text, flush=True)

    def close(self) -> None:
        if self.enabled:
            if self.bar is not None:
                self.bar.close()
            self.tb.close()
