#!/usr/bin/env python
"""Evaluation speed: tiled / overlapping-tile inference against the ideal, and the time spent outside
the network during a full evaluation pass (data loading, argmax, confusion matrices, leave-out, bands).

    python bench/eval_speed.py [--encoder resnet18 --output-stride 16 --padding partial]
        [--height 512 --width 1024 --tile-size 512 --overlap 1/3] [--images 4] [--json OUT]

Ideal cost of a tiled mode = (total tile area / image area) x (regular cost): what tiling would cost if
the network's time were proportional to the pixels it sees. Ratio 1.00 = no tiling overhead.
The evaluation pass runs on a generated Cityscapes-format demo val set of the same size; a first pass
writes labelId PNGs that cityscapesscripts scores, the timed second pass writes nothing (its region layout
is cached, as for any image after the first of a size; the one-off build time is printed separately).
All figures come from one run. :func:`warm_split` (used by bench/gpu_check.py) splits a warm pass by stage.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import tempfile
import time

import torch

from seg.cli import device_arg, fraction_arg
from seg.data import build_val_dataset
from seg.data.demo import generate_demo_dataset
from seg.engine.distributed import resolve_device
from seg.engine.loaders import build_eval_loader
from seg.evaluation import (
    InferenceSettings,
    SegmentationEvaluator,
    predict_logits,
    predicted_classes,
    preprocess,
    region_layout,
    run_inference,
    tile_grid,
    tile_stride,
    to_device,
)
from seg.evaluation.evaluator import RegionLayout
from seg.evaluation.inference import NetworkTimer
from seg.evaluation.metrics import ConfusionAccumulator
from seg.evaluation.official import PredictionWriter, official_scores
from seg.models import DeepLabV3Plus


def time_modes(model, image, modes, repeats, **kw) -> dict:
    """Median wall seconds of one predict_logits call per mode, and the network time of that run.
    Modes are interleaved in every repeat so machine load drifts affect them alike."""
    for mode in modes:  # warm-up: allocator, padding ratio caches
        predict_logits(model, image, mode, **kw)
    runs: dict[str, list[tuple[float, float]]] = {mode: [] for mode in modes}
    for _ in range(repeats):
        for mode in modes:
            timer = NetworkTimer()
            t0 = time.perf_counter()
            predict_logits(model, image, mode, forward=timer, **kw)
            runs[mode].append((time.perf_counter() - t0, timer.seconds))
    return {mode: sorted(r)[(len(r) - 1) // 2] for mode, r in runs.items()}


#: stages of one evaluated image, in order: the loader's next sample, the copy to the device, the network
#: (logits), and scoring (argmax and the confusion counts per leave-out / distance-band region)
STAGES = ("data_wait", "host_to_device", "network", "scoring")


class StageClock:
    """Timestamps between stages: CUDA events on a GPU (read once at the end: no host sync per image), else
    perf_counter. ``mark()`` closes the running stage; ``seconds()`` returns every closed stage's length."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: list = []

    def mark(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def seconds(self) -> list[float]:
        if self.cuda:
            self.marks[-1].synchronize()
            return [a.elapsed_time(b) / 1000 for a, b in itertools.pairwise(self.marks)]
        return [b - a for a, b in itertools.pairwise(self.marks)]


def _endless(loader):
    """The loader's samples over and over, each epoch loaded afresh (itertools.cycle would replay cached ones)."""
    while True:
        yield from loader


def warm_split(model, loader, device: torch.device, num_classes: int, inference: InferenceSettings,
               images: int, warmup: int, analysis: dict, normalize=None) -> dict:
    """Where the time of a warm evaluation pass goes, stage by stage (:data:`STAGES`).

    Runs ``warmup`` + ``images`` samples of ``loader`` (re-iterated, every sample loaded again; uncollated, as
    build_eval_loader gives them at batch size 1) through the evaluator's steps: copy to ``device``,
    ``inference.predict``, argmax, confusion counts over the leave-out / distance-band regions of ``analysis``
    (the keyword arguments ``leave_out`` and ``distance_bands`` of ``SegmentationEvaluator``); uint8 images are
    normalised on the device by ``normalize`` (default: the loader's dataset's ``.normalize``), timed as part of
    the network.
    On a GPU the data wait is host time between the previous image's last queued kernel and the next sample; the other
    stages are device time between CUDA events. Returns seconds per stage summed over the warm images,
    the share outside the network, ms per warm image, and ``startup_s``: the first image's time beyond the
    median warm image's (cuDNN / allocator / padding-plan set-up, paid once per size).
    """
    model.eval()
    counts = ConfusionAccumulator(num_classes, 255, device,
                                  slots=1 + len(analysis["leave_out"]) + len(analysis["distance_bands"]))
    normalize = normalize or getattr(getattr(loader, "dataset", None), "normalize", None)  # a Subset hides it
    samples, waits, clocks = _endless(loader), [], []
    with torch.no_grad():
        for _ in range(warmup + images):
            t0 = time.perf_counter()
            sample = next(samples)
            waits.append(time.perf_counter() - t0)
            clock = StageClock(device)
            clock.mark()
            image, target = to_device(sample[:2], device)  # uint8 images: normalised on the device, in "network"
            clock.mark()
            logits = inference.predict(model, preprocess(image, normalize))
            clock.mark()
            layout = region_layout(target.shape[-2:], analysis["leave_out"], "side", analysis["distance_bands"],
                                   device)  # cached per size, as the evaluator does
            counts.update_batch(predicted_classes(logits, num_classes), target, layout)
            clock.mark()
            clocks.append(clock)
    per_image = [[wait, *clock.seconds()] for wait, clock in zip(waits, clocks)]
    warm = per_image[warmup:]
    stage_s = {stage: sum(row[i] for row in warm) for i, stage in enumerate(STAGES)}
    total = sum(stage_s.values())
    warm_image_s = statistics.median(sum(row) for row in warm)
    return {"images": len(warm), "warmup": warmup, "stage_s": stage_s, "total_s": total,
            "outside_network_share": 1 - stage_s["network"] / total, "ms_per_image": 1e3 * total / len(warm),
            "startup_s": sum(per_image[0]) - warm_image_s}


def timed_evaluation(model, loader, mode, root, analysis, kw, official) -> dict:
    """Timing of one evaluation pass (plus, with `official`, mIoU checked by cityscapesscripts on a first
    pass that writes labelId PNGs; the timed pass writes nothing)."""
    row = {}
    device = next(model.parameters()).device
    if official:
        saved = run_inference(model, loader, InferenceSettings(mode, **kw),
                              [SegmentationEvaluator(**analysis), PredictionWriter(os.path.join(root, f"pred_{mode}"))],
                              device=device, progress=False)
        row["official_mIoU"] = official_scores(saved.predictions or [])["mIoU"]
    r = run_inference(model, loader, InferenceSettings(mode, **kw), [SegmentationEvaluator(**analysis)], device=device,
                      progress=False)
    row.update(r["timing"], mIoU=r["mIoU"])
    if official:
        row["abs_diff"] = abs(row["official_mIoU"] - r["mIoU"])
    return row


def main() -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--output-stride", type=int, default=16)
    p.add_argument("--padding", default="partial")
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--tile-size", type=int, default=512)
    p.add_argument("--overlap", type=fraction_arg, default=1 / 3)
    p.add_argument("--tile-batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--images", type=int, default=4, help="images in the evaluation pass")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers in the evaluation pass")
    p.add_argument("--device", default="auto", type=device_arg, help="auto (the GPU when present), cpu, cuda or cuda:N")
    p.add_argument("--no-official", action="store_true",
                   help="skip the cityscapesscripts cross-check (slow in pure Python at 1024x2048)")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args()

    device = resolve_device(args.device, "--device")
    torch.manual_seed(0)
    model = DeepLabV3Plus(args.encoder, 19, args.output_stride, padding_mode=args.padding).to(device).eval()
    h, w, t = args.height, args.width, args.tile_size
    image = torch.randn(1, 3, h, w, device=device)
    kw = dict(tile_size=t, overlap=args.overlap, tile_batch=args.tile_batch)
    print(f"{args.encoder} OS{args.output_stride} {args.padding} padding, image {h}x{w}, tile {t}, "
          f"overlap {args.overlap:.3f}, tile batch {args.tile_batch}, {device}, {torch.get_num_threads()} threads")

    out: dict = {"settings": vars(args), "modes": {}}
    times = time_modes(model, image, ("regular", "tile", "overlap"), args.repeats, **kw)
    regular_wall, regular_net = times["regular"]
    print(f"{'mode':<8} {'tiles':>5} {'area':>5} {'time s':>8} {'ideal s':>8} {'ratio':>6} {'net ratio':>9}")
    for mode, (wall, net) in times.items():
        n_tiles = 1 if mode == "regular" else len(tile_grid(h, w, t, tile_stride(mode, t, args.overlap)))
        area = 1.0 if mode == "regular" else n_tiles * t * t / (h * w)
        ideal = area * regular_wall
        row = {"tiles": n_tiles, "area_ratio": area, "seconds": wall, "ideal_seconds": ideal,
               "ratio_to_ideal": wall / ideal, "network_ratio_to_ideal": net / (area * regular_net)}
        out["modes"][mode] = row
        print(f"{mode:<8} {n_tiles:>5} {area:>5.2f} {wall:>8.3f} {ideal:>8.3f} {row['ratio_to_ideal']:>6.3f} "
              f"{row['network_ratio_to_ideal']:>9.3f}")

    with tempfile.TemporaryDirectory() as root:
        generate_demo_dataset(root, train=0, val=args.images, height=h, width=w, seed=0)
        loader = build_eval_loader(build_val_dataset({"root": root}), num_workers=args.workers)
        analysis: dict = dict(leave_out=[0, 1 / 3, 1 / 2, 2 / 3, 3 / 4, 7 / 8], distance_bands=[0, 16, 32, 64, 128])
        t0 = time.perf_counter()
        RegionLayout(h, w, analysis["leave_out"], "side", analysis["distance_bands"], device)
        layout_s = time.perf_counter() - t0
        out["region_layout_build_s"] = layout_s
        print(f"one-off per image size: leave-out/band region layout {layout_s:.3f}s (cached across passes)")
        for mode in ("regular", "overlap"):
            out[f"eval_{mode}"] = timed_evaluation(model, loader, mode, root, analysis, kw, not args.no_official)
            row = out[f"eval_{mode}"]
            check = "" if args.no_official else (f"; mIoU {row['mIoU']:.6f} vs cityscapesscripts "
                                                 f"{row['official_mIoU']:.6f} (|diff| {row['abs_diff']:.1e})")
            print(f"run_inference({mode}) on {args.images} images with 6 leave-out proportions and 5 bands: "
                  f"{row['total_s']:.2f}s, network {row['network_s']:.2f}s, outside the network "
                  f"{100 * row['outside_share']:.1f}%{check}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
