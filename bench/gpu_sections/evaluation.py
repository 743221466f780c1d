"""Sections "eval_split" (where a warm evaluation pass spends its time) and "data" (DataLoader throughput
against what one GPU consumes)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import eval_speed
import torch
from torch.utils.data import Subset

from seg.data import build_val_dataset
from seg.data.demo import generate_demo_dataset
from seg.engine.loaders import build_eval_loader
from seg.evaluation import InferenceSettings
from seg.models import DeepLabV3Plus

from .report import Run, SectionResult, Table, fmt, holds

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(BENCH)
#: the analyses of a paper evaluation: 6 centre leave-out proportions, 5 distance bands
ANALYSIS = dict(leave_out=[0, 1 / 3, 1 / 2, 2 / 3, 3 / 4, 7 / 8], distance_bands=[0, 16, 32, 64, 128])

EVAL_SIZES = {"gpu": dict(encoder="wider_resnet38", output_stride=8, height=1024, width=2048, dataset_images=4,
                          images=32, warmup=4, workers=4),
              "dry": dict(encoder="resnet18", output_stride=16, height=64, width=128, dataset_images=2, images=4,
                          warmup=1, workers=0)}
DATA_SIZES = {"gpu": ["--samples", "48", "--images", "8", "--gen-workers", "8", "--workers", "0", "1", "2", "4", "8",
                      "--batch-size", "4"],
              "dry": ["--samples", "2", "--images", "2", "--height", "64", "--crop", "32", "--workers", "0",
                      "--batch-size", "1"]}


def eval_split(run: Run) -> SectionResult:
    """A warm evaluation pass (eval_speed.warm_split), partial padding, fp32, whole images."""
    sizes, device = run.sizes(EVAL_SIZES), run.device
    h, w = sizes["height"], sizes["width"]
    root = os.path.join(run.tmp, "eval_data")
    generate_demo_dataset(root, train=0, val=sizes["dataset_images"], height=h, width=w, seed=0,
                          workers=min(8, os.cpu_count() or 1))
    dataset = build_val_dataset({"root": root})
    # the few generated images repeated in one loader pass: its workers start once, as in a real evaluation
    passes = -(-(sizes["warmup"] + sizes["images"]) // len(dataset))
    loader = build_eval_loader(Subset(dataset, list(range(len(dataset))) * passes), num_workers=sizes["workers"])
    torch.manual_seed(0)
    model = DeepLabV3Plus(sizes["encoder"], 19, sizes["output_stride"], padding_mode="partial").to(device)
    split = eval_speed.warm_split(model, loader, device, 19, InferenceSettings(), sizes["images"], sizes["warmup"],
                                  ANALYSIS, normalize=dataset.normalize)
    rows = [[stage, s, 1e3 * s / split["images"], 100 * s / split["total_s"]] for stage, s in split["stage_s"].items()]
    table = Table(f"Warm evaluation pass: {sizes['encoder']} DeepLabV3+ OS{sizes['output_stride']}, partial padding, "
                  f"{h}x{w}, fp32, {split['images']} images after {split['warmup']} warm-up ones (data re-loaded by "
                  f"{sizes['workers']} workers), 6 leave-out proportions and 5 distance bands scored",
                  ["stage", "seconds", "ms / image", "% of the pass"], rows)
    note = (f"Outside the network: {100 * split['outside_network_share']:.1f}% of a warm pass "
            f"({fmt(split['ms_per_image'])} ms / image). Fixed start-up cost (first image beyond a warm one): "
            f"{fmt(split['startup_s'])} s.")
    checks = [holds(f"at least {sizes['images']} warm images timed", split["images"] >= sizes["images"])]
    return SectionResult("eval_split", results=split, checks=checks, tables=[table], note=note)


def data(run: Run) -> SectionResult:
    """bench/data_speed.py in a subprocess: training samples/s by DataLoader worker count."""
    gpu_img_s = _consumed_img_s(run)
    args = run.sizes(DATA_SIZES) + (["--gpu-img-s", f"{gpu_img_s:.2f}"] if gpu_img_s else [])
    json_path = os.path.join(run.tmp, "data_speed.json")
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "data_speed.py"), *args, "--json", json_path],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"data_speed.py exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    with open(json_path) as f:
        result = json.load(f)
    rows = [[r["workers"], r["samples_per_s"], r["samples_per_s"] / gpu_img_s if gpu_img_s else None]
            for r in result["loader"]]
    return SectionResult("data", results=result, tables=[Table(
        f"Training samples/s (uint8 crops) by DataLoader workers on this machine's {os.cpu_count()} CPU cores; one "
        f"GPU trains at {fmt(gpu_img_s)} img/s (zero padding, first encoder of train_speed)",
        ["workers", "samples/s", "share of one GPU's need"], rows)])


def _consumed_img_s(run: Run) -> float | None:
    """Zero-padding img/s of the first train_speed row, when that section ran."""
    speed = run.done.get("train_speed")
    rows = list(speed.results.values()) if speed and speed.status == "ok" else []
    return rows[0]["zeros_img_s"] if rows else None
