#!/usr/bin/env python
"""The device check: one command, about 5 minutes on one H200, sections in priority order.

    python bench/gpu_check.py [--out work_dirs/gpu_check] [--budget-s 330]     # or: make gpu-check
    python bench/gpu_check.py --dry-run        # CPU, tiny sizes: the same code paths, in `make test`

Writes OUT/gpu_check.json and OUT/gpu_check.md (device, driver, torch / CUDA / cuDNN versions, one part per
section; both rewritten after every section, so a cut-off run keeps what it measured) and exits 1 when a
check fails or a section raises. A section whose time estimate no longer fits the budget is skipped and
says so. Default sections, in priority order (bench/gpu_sections/):

  correctness  PartialConv2d forward and gradients on the device against the float64 CPU reference
               (seg.nn.reference): every re-weighting strategy, fp32 (TF32 off) / bf16 / fp16 autocast, NCHW
               and channels_last, each steady-state step under torch.cuda.set_sync_debug_mode("error");
               mask mode; convert_padding round trip; one DeepLabV3+ training step on the device vs the CPU
  table1       the paper's Table 1: ResNet-50 and VGG16-BN, batch 64 at 224x224, fp32, forward /
               forward+backward / first call, zeros / partial (auto) / each strategy / naive reference,
               NCHW and channels_last
  train_speed  DeepLabV3+ ResNet-50 and WideResNet-38 bf16 training img/s, zeros vs partial, both layouts
  compile      torch.compile: graphs and graph breaks over five input sizes (zeros vs partial), then the
               inductor forward+backward time ratio on ResNet-50 and VGG16-BN
  eval_split   a warm evaluation pass (>= 32 images after warm-up) split into data wait / host-to-device /
               network / scoring, and the fixed start-up cost
On request (--sections): train_cli (tools/train.py under torchrun, killed and resumed), data (DataLoader
samples/s against what one GPU consumes).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the sibling bench scripts and gpu_sections

from gpu_sections import correctness, evaluation, speed, training  # noqa: E402
from gpu_sections.report import Report, Run, SectionResult, environment  # noqa: E402


@dataclass(frozen=True)
class Section:
    name: str
    run: Callable[[Run], SectionResult]
    estimate_s: float  # on an H100/H200-class GPU, checked against the budget left before it starts
    default: bool = True


SECTIONS = (Section("correctness", correctness.correctness, 30),
            Section("table1", speed.table1, 60),
            Section("train_speed", speed.training_speed, 60),
            Section("compile", speed.compile_check, 100),
            Section("eval_split", evaluation.eval_split, 30),
            Section("train_cli", training.train_cli, 100, default=False),
            Section("data", evaluation.data, 45, default=False))
DEFAULT_BUDGET_S = 330.0


def run_section(report: Report, section: Section, run: Run) -> None:
    """Run one section into ``report``: skipped when its estimate exceeds the budget left (not in the dry run),
    "error" with the exception's line when it raises (the other sections still run)."""
    left = run.deadline - time.monotonic()
    if not run.dry_run and left < section.estimate_s:
        result = SectionResult(section.name, status="skipped",
                               note=f"skipped: {left:.0f} s of the budget left, about {section.estimate_s:.0f} s "
                                    "needed")
        print(f"[gpu_check] {section.name}: skipped (budget)", flush=True)
    else:
        print(f"[gpu_check] {section.name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            result = section.run(run)
            result.status = "failed" if any(not c.ok for c in result.checks) else "ok"
        except Exception as e:  # one broken section must not cost the measurements of the others
            traceback.print_exc()
            result = SectionResult(section.name, status="error", note=f"error: {type(e).__name__}: {e}"[:2000])
        result.seconds = round(time.perf_counter() - t0, 1)
        print(f"[gpu_check] {section.name}: {result.status} ({result.seconds:.0f} s)", flush=True)
    run.done[section.name] = result
    report.add(result)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="work_dirs/gpu_check", help="folder for gpu_check.json / gpu_check.md")
    p.add_argument("--dry-run", action="store_true", help="run every section on the CPU at tiny sizes")
    p.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="sections that would not fit are skipped")
    p.add_argument("--sections", nargs="+", default=[s.name for s in SECTIONS if s.default],
                   choices=[s.name for s in SECTIONS], help="run in the priority order above, whatever the order here")
    args = p.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        p.error("no CUDA device: run on a GPU machine, or use --dry-run for the CPU self-test")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.monotonic()
    device = torch.device("cpu" if args.dry_run else "cuda")
    if args.dry_run:  # tiny tensors: one thread is as fast, and a busy machine cannot oversubscribe it
        torch.set_num_threads(1)
    report = Report(args.out, environment(device, args.dry_run))
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(device, tmp, start + args.budget_s, args.dry_run)
        for section in SECTIONS:
            if section.name in args.sections:
                run_section(report, section, run)
                report.env["elapsed_s"] = time.monotonic() - start
    report.write()
    print(f"[gpu_check] wrote {os.path.join(args.out, 'gpu_check.md')} and gpu_check.json "
          f"({report.env['elapsed_s']:.0f} s)")
    if report.failed:
        print("[gpu_check] FAILED: " + "; ".join(report.failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
