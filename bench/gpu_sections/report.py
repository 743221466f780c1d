"""One result type for every section of the device check, the run context they share, and the report.

The report is rewritten (atomically) after every section as JSON and Markdown, so a run cut off by its
time limit keeps what it measured.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import platform
import subprocess
from dataclasses import dataclass, field
from typing import Any

import torch

from seg.atomic import atomic_write_json, atomic_write_text
from seg.report import Table as ReportTable
from seg.report import measured as fmt  # the sections' name for it

#: section statuses: "failed" = a check did not hold; "error" = the section raised
STATUSES = ("ok", "failed", "error", "skipped")


@dataclass
class Check:
    """One verified claim: ``ok``, and for a measured one its ``value`` and the ``limit`` it must not exceed."""

    name: str
    ok: bool
    value: float | None = None
    limit: float | None = None


def within(name: str, value: float, limit: float) -> Check:
    """A measured check: ``value <= limit`` (NaN fails)."""
    return Check(name, bool(value <= limit), float(value), float(limit))


def holds(name: str, ok: bool) -> Check:
    """A yes / no check."""
    return Check(name, bool(ok))


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list]


@dataclass
class SectionResult:
    """What one section measured and checked. ``status`` and ``seconds`` are set by the driver."""

    name: str
    status: str = "ok"
    seconds: float = 0.0
    results: dict = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    note: str = ""

    @property
    def failures(self) -> list[str]:
        """One line per failed check, and the note of a section that raised."""
        lines = [f"{self.name}: {c.name}" for c in self.checks if not c.ok]
        return lines + ([f"{self.name}: {self.note}"] if self.status == "error" else [])


@dataclass
class Run:
    """What every section gets: the device, a scratch folder, the monotonic deadline of the whole run, whether
    it is the CPU dry run, and the sections finished so far."""

    device: torch.device
    tmp: str
    deadline: float
    dry_run: bool
    done: dict[str, SectionResult] = field(default_factory=dict)

    def sizes(self, table: dict[str, Any]) -> Any:
        """A section's sizes: ``table["dry"]`` in the dry run (tiny, CPU), else ``table["gpu"]``."""
        return table["dry" if self.dry_run else "gpu"]


@contextlib.contextmanager
def no_host_sync(device: torch.device):
    """On CUDA every host sync inside raises (``torch.cuda.set_sync_debug_mode("error")``); elsewhere a no-op."""
    if device.type != "cuda":
        yield
        return
    old = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(old)


@contextlib.contextmanager
def tf32(allowed: bool):
    """TF32 matmuls and convolutions allowed or not inside, restored after."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool):
    """cuDNN autotuning on or off inside, restored after."""
    old, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old


def environment(device: torch.device, dry_run: bool) -> dict:
    driver = "n/a"
    if device.type == "cuda":
        try:
            driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=30).stdout.strip() or "unknown"
        except (OSError, subprocess.SubprocessError):
            driver = "unknown (nvidia-smi failed)"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()})"
    return {"device": name, "driver": driver, "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "dry_run": dry_run, "date": datetime.date.today().isoformat(),
            "elapsed_s": 0.0}


class Report:
    """Every section's result, written as OUT/gpu_check.json and OUT/gpu_check.md after each one."""

    def __init__(self, out_dir: str, env: dict):
        self.out_dir, self.env = out_dir, env
        self.sections: dict[str, SectionResult] = {}

    def add(self, section: SectionResult) -> None:
        self.sections[section.name] = section
        self.write()

    @property
    def failed(self) -> list[str]:
        return [line for s in self.sections.values() for line in s.failures]

    def write(self) -> None:
        doc = {"environment": self.env, "sections": {n: dataclasses.asdict(s) for n, s in self.sections.items()},
               "failed": self.failed}
        atomic_write_json(doc, os.path.join(self.out_dir, "gpu_check.json"), indent=1, default=str)
        atomic_write_text(os.path.join(self.out_dir, "gpu_check.md"), self.markdown())

    def markdown(self) -> str:
        e = self.env
        lines = [f"### GPU check on {e['device']} ({e['date']})", "",
                 f"Driver {e['driver']}, torch {e['torch']}, CUDA {e['cuda']}, cuDNN {e['cudnn']}, "
                 f"Python {e['python']}, {e['cpu_count']} CPU cores. `python bench/gpu_check.py` "
                 f"({'dry run' if e['dry_run'] else 'full run'}), {e['elapsed_s']:.0f} s.", ""]
        for s in self.sections.values():
            lines += [f"#### {s.name}: {s.status} ({s.seconds:.0f} s)", ""]
            if s.note:
                lines += [s.note, ""]
            if s.checks:
                lines += [ReportTable(["check", "value", "limit", "ok"],
                                      [[c.name, fmt(c.value), fmt(c.limit), "yes" if c.ok else "NO"]
                                       for c in s.checks]).markdown(), ""]
            for t in s.tables:
                lines += [t.title, "", ReportTable(t.header, [[fmt(v) for v in row] for row in t.rows]).markdown(), ""]
        return "\n".join(lines) + "\n"
