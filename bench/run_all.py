"""Run every benchmark in one go and write BENCHMARKS.md (`make bench`).

    python bench/run_all.py [--quick] [--out BENCHMARKS.md] [--json-dir work_dirs/bench]

Each bench script runs as its own process (so one script's allocator state cannot bend another's
numbers), prints its table, and writes its JSON under --json-dir. BENCHMARKS.md gets the machine
description and each script's table verbatim: the numbers are exactly what this run printed.
On a machine with CUDA the scripts that take --device run there too, and say so in their tables.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time

from seg.machine import cpu_model

PROGRESS = re.compile(r"\d+%\|")  # a tqdm bar
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (title, script, arguments for a full run, arguments for --quick); sizes fit a 2-core CPU in minutes
BENCHES = [
    ("Padding overhead: torchvision ResNet-50 and VGG16-BN, zeros vs partial vs reference-style naive partial",
     "padding_overhead.py", ["--arch", "resnet50", "vgg16_bn", "--size", "2", "3", "192", "384", "--repeats", "5"],
     ["--arch", "resnet50", "--size", "1", "3", "96", "192", "--repeats", "2"]),
    ("Model speed: DeepLabV3+ ResNet-50 OS8, zeros vs partial",
     "model_speed.py", ["--size", "2", "3", "256", "512", "--repeats", "3", "--threads", "2"],
     ["--size", "2", "3", "96", "128", "--repeats", "1", "--threads", "2"]),
    ("Training speed: demo config (DeepLabV3+ ResNet-18), zeros vs partial",
     "train_speed.py", ["configs/demo/deeplabv3plus_r18_zeros.yaml", "--iters", "5", "--rounds", "3",
                        "--crop", "128", "--batch", "4", "--threads", "2"],
     ["configs/demo/deeplabv3plus_r18_zeros.yaml", "--iters", "1", "--rounds", "1", "--crop", "64", "--batch", "2",
      "--no-memory"]),
    ("Data pipeline: demo generator and training samples/s at crop 896 on 1024x2048 images",
     "data_speed.py", ["--samples", "16", "--images", "4"], ["--samples", "2", "--images", "2"]),
    ("Evaluation speed: tiled / overlapping-tile inference against the ideal, time outside the network",
     "eval_speed.py", ["--images", "4"], ["--images", "1", "--height", "128", "--width", "256", "--tile-size", "128"]),
]


def describe_machine() -> str:
    import torch
    return (f"{cpu_model()}, {os.cpu_count()} CPU cores, "
            f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}; Python "
            f"{platform.python_version()}, torch {torch.__version__}; {datetime.date.today().isoformat()}")


def run_bench(script: str, args: list[str], json_path: str) -> tuple[str, float, int]:
    cmd = [sys.executable, os.path.join("bench", script), *args, "--json", json_path]
    print(f"\n$ {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    print(proc.stdout, flush=True)
    return proc.stdout, time.perf_counter() - start, proc.returncode


def gpu_section() -> list[str]:
    """The GPU reports that bench/gpu_check.py wrote into bench/results (kept as measured, never re-run here)."""
    folder = os.path.join(ROOT, "bench", "results")
    if not os.path.isdir(folder):
        return []
    with open(os.path.join(folder, "README.md")) as f:
        lines = ["## GPU (bench/gpu_check.py)", "", f.read().strip(), ""]
    for name in sorted(n for n in os.listdir(folder) if n.startswith("gpu_check_") and n.endswith(".md")):
        with open(os.path.join(folder, name)) as f:
            lines += [f"<!-- bench/results/{name} -->", f.read().replace("### GPU check", f"### {name}: GPU check")
                      .strip(), ""]
    return lines


def strip_progress(text: str) -> str:
    """Keep the printed tables, drop tqdm bars and library warnings."""
    lines = (line.split("\r")[-1] for line in text.splitlines())
    keep = [line for line in lines
            if line.strip() and not PROGRESS.search(line) and "Warning" not in line and "warnings.warn" not in line]
    return "\n".join(keep)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check that every script runs")
    p.add_argument("--out", default="BENCHMARKS.md")
    p.add_argument("--json-dir", default="work_dirs/bench")
    p.add_argument("--only", nargs="*", help="script names to run (default: all)")
    args = p.parse_args(argv)
    os.makedirs(os.path.join(ROOT, args.json_dir), exist_ok=True)
    sections, failed = [], []
    for title, script, full, quick in BENCHES:
        if args.only and script not in args.only:
            continue
        json_path = os.path.join(args.json_dir, script.replace(".py", ".json"))
        out, seconds, code = run_bench(script, quick if args.quick else full, json_path)
        if code:
            failed.append(script)
        cmd = f"python bench/{script} {' '.join(quick if args.quick else full)}"
        status = f"exit code {code}: FAILED" if code else f"{seconds:.0f} s"
        sections += [f"## {title}", "", f"`{cmd}` ({status}; JSON: `{json_path}`)", "", "```",
                     strip_progress(out), "```", ""]
    text = "\n".join([
        "# Benchmarks", "",
        f"Generated by `make bench` (`python bench/run_all.py{' --quick' if args.quick else ''}`). Machine: "
        f"{describe_machine()}.", "",
        "Every figure is from this one run; variants are interleaved within each script so that drift in "
        "machine speed hits them alike, and the ratios (partial / zeros) are the numbers to read. "
        "CPU timings on a small shared machine are noisy at the level of a few percent.", "",
        *sections, *gpu_section()])
    with open(os.path.join(ROOT, args.out), "w") as f:
        f.write(text)
    print(f"wrote {args.out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
