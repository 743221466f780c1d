"""Speed and peak memory of DeepLabV3+ with partial vs zero padding, same weights, interleaved.

Both models are timed in turn within every repeat (order alternating between repeats), so drift in
machine speed hits them alike; medians over repeats are reported with the partial/zeros ratios.
Steps: forward (eval, no grad) and forward+backward (train mode, mean-logit loss).
Peak memory: CUDA ``max_memory_allocated`` above the pre-step level, measured in every repeat. CPU: peak
RSS above the pre-step RSS, measured once per (padding, step) in a fresh subprocess with glibc's mmap
threshold pinned at 1 MiB, because in-process the allocator keeps freed heap resident and hides the
next step's peak (Linux ``/proc/self/clear_refs`` resets the high-water mark).

    python bench/model_speed.py                       # 2x3x256x512, CPU-sized
    python bench/model_speed.py --size 2 3 1024 2048 --device cuda --repeats 10 --json speed.json
    python bench/model_speed.py --threads 1 --clock cpu  # on a shared, busy CPU machine

The default batch is 2 because the ASPP's image-pooling BatchNorm cannot train on a single image.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from seg.cli import device_arg
from seg.engine.distributed import resolve_device
from seg.models import DeepLabV3Plus

MODES = ("zeros", "partial")
STEPS = ("forward", "forward+backward")


# -- memory ----------------------------------------------------------------------------------------

def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_rss_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Context manager measuring the peak memory (MiB) a step adds; ``.mib`` is None if unmeasurable."""

    def __init__(self, device: torch.device):
        self.device = device
        self.mib: float | None = None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._ok = _reset_rss_peak()
            self._base = _proc_status_kib("VmRSS") * 1024 if self._ok else 0
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif self._ok:
            self.mib = (_proc_status_kib("VmHWM") * 1024 - self._base) / 2**20
        return False


# -- steps -----------------------------------------------------------------------------------------

def forward_step(model: torch.nn.Module, x: torch.Tensor) -> None:
    model.eval()
    with torch.no_grad():
        model(x)


def train_step(model: torch.nn.Module, x: torch.Tensor) -> None:
    model.train()
    model(x).float().mean().backward()
    model.zero_grad(set_to_none=True)


STEP_FNS = {"forward": forward_step, "forward+backward": train_step}


#: "wall": elapsed time; "cpu": this process's CPU time, which a busy shared machine does not inflate
#: by descheduling us (use it with --threads 1, where no thread spin-waits)
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def timed(fn, model, x, device, clock: str = "wall") -> tuple[float, float | None]:
    """(seconds, peak MiB) of one ``fn(model, x)``."""
    now = CLOCKS[clock]
    with PeakMemory(device) as mem:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = now()
        fn(model, x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = now() - start
    return seconds, mem.mib


def build_models(args, device, modes=MODES) -> dict[str, torch.nn.Module]:
    """One DeepLabV3+ per padding mode, all with the same (seed 0) weights."""
    models: dict[str, torch.nn.Module] = {}
    for mode in modes:
        torch.manual_seed(0)
        models[mode] = DeepLabV3Plus(args.encoder, num_classes=19, output_stride=args.output_stride,
                                     padding_mode=mode).to(device)
    return models


def cpu_memory_probe(args, mode: str, step: str) -> float | None:
    """Peak RSS (MiB) one ``step`` adds, from a fresh subprocess (see module docstring)."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(2**20), MALLOC_TRIM_THRESHOLD_=str(2**20))
    cmd = [sys.executable, os.path.abspath(__file__), "--size", *map(str, args.size), "--encoder", args.encoder,
           "--output-stride", str(args.output_stride), "--threads", str(args.threads),
           "--memory-probe", mode, step]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe {mode}/{step} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mib"]


def memory_probe_main(args) -> None:
    """Child side of :func:`cpu_memory_probe`: warm up once, then measure one step; prints JSON."""
    if args.threads:
        torch.set_num_threads(args.threads)
    mode, step = args.memory_probe
    model = build_models(args, torch.device("cpu"), modes=(mode,))[mode]
    x = torch.randn(*args.size)
    STEP_FNS[step](model, x)
    _, mib = timed(STEP_FNS[step], model, x, torch.device("cpu"))
    print(json.dumps({"peak_mib": mib}))


def run(args) -> dict:
    device = resolve_device(args.device, "--device")
    if args.threads:
        torch.set_num_threads(args.threads)
    models = build_models(args, device)
    x = torch.randn(*args.size, device=device)
    for step in STEPS:  # warm-up: allocator, cudnn autotune, partial-conv plans
        for mode in MODES:
            for _ in range(args.warmup):
                STEP_FNS[step](models[mode], x)
    times: dict[tuple[str, str], list[float]] = {(m, s): [] for m in MODES for s in STEPS}
    peaks: dict[tuple[str, str], list[float | None]] = {(m, s): [] for m in MODES for s in STEPS}
    for rep in tqdm(range(args.repeats), desc="repeats"):
        order = MODES if rep % 2 == 0 else MODES[::-1]
        for step in STEPS:
            for mode in order:
                seconds, mib = timed(STEP_FNS[step], models[mode], x, device, args.clock)
                times[mode, step].append(seconds)
                peaks[mode, step].append(mib)
    if device.type == "cpu":
        for mode in MODES:
            for step in STEPS:
                peaks[mode, step] = [cpu_memory_probe(args, mode, step)]
    batch = args.size[0]
    results = []
    for step in STEPS:
        row: dict = {"step": step}
        for mode in MODES:
            med = statistics.median(times[mode, step])
            valid = [p for p in peaks[mode, step] if p is not None]
            row[mode] = {"median_s": med, "images_per_s": batch / med, "peak_mib": max(valid) if valid else None,
                         "times_s": times[mode, step]}
        row["time_ratio"] = row["partial"]["median_s"] / row["zeros"]["median_s"]
        # each repeat times both modes back to back, so its own ratio cancels slow drifts in machine load
        row["paired_ratio"] = statistics.median(p / z for p, z in zip(times["partial", step], times["zeros", step]))
        if row["zeros"]["peak_mib"] and row["partial"]["peak_mib"] is not None:
            row["memory_ratio"] = row["partial"]["peak_mib"] / row["zeros"]["peak_mib"]
        results.append(row)
    return {"encoder": args.encoder, "output_stride": args.output_stride, "size": list(args.size),
            "repeats": args.repeats, "device": str(device), "device_name": device_name(device),
            "threads": torch.get_num_threads(), "clock": args.clock, "torch": torch.__version__, "results": results}


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()


def print_table(report: dict) -> None:
    b, c, h, w = report["size"]
    print(f"\nDeepLabV3+ {report['encoder']} OS{report['output_stride']}, input {b}x{c}x{h}x{w}, "
          f"{report['device']} ({report['device_name']}, {report['threads']} threads), "
          f"{report['clock']} clock, median of {report['repeats']} interleaved repeats")
    print(f"{'step':<17} {'padding':<8} {'median s':>9} {'images/s':>9} {'peak MiB':>9}")
    for row in report["results"]:
        for mode in MODES:
            r = row[mode]
            peak = f"{r['peak_mib']:9.0f}" if r["peak_mib"] is not None else f"{'n/a':>9}"
            print(f"{row['step']:<17} {mode:<8} {r['median_s']:9.4f} {r['images_per_s']:9.2f} {peak}")
        mem = f", memory x{row['memory_ratio']:.3f}" if "memory_ratio" in row else ""
        print(f"{row['step']:<17} partial/zeros: time x{row['time_ratio']:.3f} "
              f"({100 * (row['time_ratio'] - 1):+.1f}%), median per-repeat ratio x{row['paired_ratio']:.3f}{mem}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=4, default=[2, 3, 256, 512], metavar=("B", "C", "H", "W"))
    parser.add_argument("--encoder", default="resnet50")
    parser.add_argument("--output-stride", type=int, default=8, choices=(8, 16))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="auto", type=device_arg, help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                        help="wall time, or process CPU time (robust on a shared CPU machine; CPU only)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--memory-probe", nargs=2, metavar=("PADDING", "STEP"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.size[1] != 3:
        parser.error("--size channel count must be 3 (RGB)")
    if args.clock == "cpu" and resolve_device(args.device, "--device").type == "cuda":
        parser.error("--clock cpu measures host CPU time; use wall time on CUDA")
    if args.size[0] < 2:
        parser.error("--size batch must be >= 2: the ASPP image-pooling BatchNorm cannot train on one image")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.memory_probe:
        memory_probe_main(args)
        return
    report = run(args)
    print_table(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
