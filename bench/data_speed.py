#!/usr/bin/env python
"""Data pipeline speed: demo generator images/s, and training samples/s at crop 896 on 1024x2048 images
with 0, 1, 2, ... DataLoader workers (default augmentations, class-balanced fraction 0.5).

    python bench/data_speed.py [--samples 24] [--workers 0 1 2 4 8] [--gpu-img-s 21.5]
        [--json work_dirs/bench/data_speed.json]

Workers hand over uint8 crops (normalisation runs on the training device), so the inter-process copy of a
896x896 sample is 2.4 MB, not 9.6 MB of float32. With --gpu-img-s (the img/s one GPU trains at, from
bench/gpu_check.py or bench/train_speed.py) the table says how many workers keep that GPU fed.

Prints a table and writes the numbers as JSON. All figures come from this one run on this machine.
"""
import argparse
import json
import os
import tempfile
import time

import torch
from torch.utils.data import DataLoader, Subset

from seg.data import build_train_dataset
from seg.data.demo import generate_demo_dataset


def generator_speed(out: str, n: int, height: int, width: int, workers: int = 1) -> dict:
    """Images/s of the demo generator in one process: per wall second and per CPU second (the latter is
    what one core delivers even when other jobs share the machine)."""
    t0, c0 = time.perf_counter(), time.process_time()
    generate_demo_dataset(out, train=n, val=0, height=height, width=width, seed=0, workers=workers)
    return {"size": f"{height}x{width}", "images": n, "processes": workers, "img_per_s": n / (time.perf_counter() - t0),
            "img_per_cpu_s": n / (time.process_time() - c0)}


def loader_speed(ds, workers: int, samples: int, batch_size: int, crop: int) -> dict:
    """Samples/s of a DataLoader, steady state (after the first batch) and including start-up."""
    if len(ds) < batch_size:
        raise SystemExit(f"data_speed: {len(ds)} training image(s), fewer than --batch-size {batch_size}")
    # one loader pass covers every sample several times: workers start once, as in a long training epoch
    repeats = -(-(samples + batch_size) // len(ds))
    loader = DataLoader(Subset(ds, list(range(len(ds))) * repeats), batch_size=batch_size, shuffle=True,
                        num_workers=workers, drop_last=True)
    t0 = time.perf_counter()
    seen, epoch, t_first = 0, 0, None
    while seen < samples + batch_size:
        ds.set_epoch(epoch)
        for images, targets in loader:
            assert images.shape[-2:] == (crop, crop) and images.dtype == torch.uint8 and targets.dtype == torch.int64
            seen += images.shape[0]
            if t_first is None:
                t_first, seen = time.perf_counter(), 0
            elif seen >= samples:
                break
        epoch += 1
    t1 = time.perf_counter()
    assert t_first is not None  # the while loop ran at least one batch: len(ds) >= batch_size was checked
    return {"workers": workers, "samples": seen, "samples_per_s": seen / (t1 - t_first),
            "samples_per_s_incl_startup": (seen + batch_size) / (t1 - t0)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=24, help="timed samples per worker setting")
    p.add_argument("--images", type=int, default=16, help="generated 1024x2048 training images")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--crop", type=int, default=896)
    p.add_argument("--height", type=int, default=1024, help="generated image height (width = 2 x height)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader worker counts to time")
    p.add_argument("--gen-workers", type=int, default=1, help="processes generating the large images")
    p.add_argument("--gpu-img-s", type=float, default=None, help="img/s one GPU trains at, to size num_workers")
    p.add_argument("--json", default="work_dirs/bench/data_speed.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    result: dict = {"cpu_count": os.cpu_count(), "load_avg_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        big = os.path.join(tmp, "big")
        result["generator"] = [generator_speed(os.path.join(tmp, "small"), 40, 256, 512),
                               generator_speed(big, args.images, args.height, 2 * args.height, args.gen_workers)]
        ds = build_train_dataset({"root": big, "crop_size": args.crop}, seed=0)
        result["loader"] = [loader_speed(ds, w, args.samples, args.batch_size, args.crop) for w in args.workers]
        result["gpu_img_s"] = args.gpu_img_s
    result["load_avg_after"] = os.getloadavg()[0]
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    print(f"{'demo generator, 1 process':<28}{'img/s (wall)':>13}{'img/CPU-s':>11}")
    for g in result["generator"]:
        print(f"{g['size']:<28}{g['img_per_s']:>13.1f}{g['img_per_cpu_s']:>11.1f}")
    print(f"load average before/after: {result['load_avg_before']:.1f} / {result['load_avg_after']:.1f} "
          "(other jobs on the machine slow the wall-clock figures)")
    print(f"training samples/s (uint8), crop {args.crop} from {args.height}x{2 * args.height}, batch "
          f"{args.batch_size}, {os.cpu_count()} CPU cores:")
    gpu = f"{'of one GPU':>11}" if args.gpu_img_s else ""
    print(f"{'workers':>8} {'samples/s':>10} {'incl. start-up':>15} {'vs first':>9}{gpu}")
    base = result["loader"][0]["samples_per_s"]
    for r in result["loader"]:
        feeds = f"{r['samples_per_s'] / args.gpu_img_s:>10.2f}x" if args.gpu_img_s else ""
        print(f"{r['workers']:>8} {r['samples_per_s']:>10.2f} {r['samples_per_s_incl_startup']:>15.2f} "
              f"{r['samples_per_s'] / base:>8.2f}x{feeds}")
    if args.gpu_img_s:
        print(f"one GPU trains at {args.gpu_img_s:.1f} img/s: a worker count whose 'of one GPU' is >= 1 keeps it fed")
    print(f"JSON: {args.json}")


if __name__ == "__main__":
    main()
