"""Training speed and peak memory of zero vs partial padding on the same config, in one run.

Each variant is the same network (same seed, same weights) with ``model.padding`` swapped, trained with
the engine's own step (``seg.engine.train_step``: autocast per ``train.amp``, GradScaler, SGD) on one
fixed synthetic batch, so data loading is out of the picture. Timed rounds alternate between variants
so drift in machine speed hits all alike; the median round is reported.
Peak memory: CUDA allocator peak per variant; on CPU the peak resident set of a fresh child process
that runs the same steps (the allocator has no peak counter on CPU).

    python bench/train_speed.py configs/demo/deeplabv3plus_r18_zeros.yaml --iters 5 --rounds 3
    python bench/train_speed.py configs/cityscapes/deeplabv3plus_r50_zeros_896.yaml --batch 2 \
        --opts model.pretrained=null
    torchrun --nproc_per_node 8 bench/train_speed.py CONFIG ...   # DDP (+ SyncBN on GPU), rank 0 reports

``--batch`` is per process (default: train.batch_size / world size).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import time

import torch
from torch.nn.parallel import DistributedDataParallel

from seg.config import load_config
from seg.engine import (
    DistInfo,
    build_optimizer,
    cleanup_distributed,
    init_distributed,
    seed_everything,
    set_determinism,
    train_step,
)
from seg.engine.distributed import barrier, convert_sync_bn
from seg.engine.step import amp_dtype
from seg.models import build_model
from seg.segmentation import build_criterion


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", default="configs/demo/deeplabv3plus_r18_zeros.yaml")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--variants", nargs="+", default=["zeros", "partial"])
    p.add_argument("--batch", type=int, default=None, help="images per process (default: global batch / world)")
    p.add_argument("--crop", type=int, default=None, help="square crop (default: data.crop_size)")
    p.add_argument("--iters", type=int, default=10, help="timed iterations per round")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations per variant")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's; 1 on a busy machine)")
    p.add_argument("--no-memory", action="store_true", help="skip the CPU peak-memory child processes")
    p.add_argument("--json", default=None, help="also write the results here")
    return p.parse_args(argv)


class Runner:
    """One variant: model, optimizer, scaler and a fixed synthetic batch, ready to step."""

    def __init__(self, cfg: dict, padding: str, info: DistInfo, batch: int, crop: int, channels_last: bool = False):
        train_cfg = cfg["train"]
        seed_everything(train_cfg["seed"])  # same weights for every variant
        model: torch.nn.Module = build_model({**cfg["model"], "padding": padding})
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        model = convert_sync_bn(model, train_cfg["sync_bn"], info).to(info.device)
        model = model.to(memory_format=memory_format).train()
        self.optimizer = build_optimizer(model, train_cfg)
        self.model = DistributedDataParallel(model, device_ids=[info.device.index] if info.device.type == "cuda"
                                             else None) if info.distributed else model
        self.scaler = torch.amp.GradScaler(info.device.type, enabled=train_cfg["amp"] == "fp16")
        self.criterion = build_criterion(train_cfg, info.device)
        self.dtype = amp_dtype(train_cfg["amp"])
        g = torch.Generator().manual_seed(train_cfg["seed"] + info.rank)
        self.images = torch.randn(batch, 3, crop, crop, generator=g).to(info.device, memory_format=memory_format)
        self.targets = torch.randint(0, cfg["model"]["num_classes"], (batch, crop, crop), generator=g).to(info.device)
        self.device = info.device

    def step(self, n: int) -> float:
        """Run n training steps; returns seconds (device-synchronised)."""
        self._sync()
        t0 = time.perf_counter()
        for _ in range(n):
            train_step(self.model, self.images, self.targets, self.criterion, self.optimizer, self.scaler, self.dtype)
        self._sync()
        return time.perf_counter() - t0

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _proc_status_mib(field: str) -> float:
    """VmRSS / VmHWM of this process in MiB (Linux). VmHWM is per address space, so it starts afresh at
    exec, unlike getrusage's ru_maxrss which a spawned child inherits from its parent."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _cpu_peak_child(cfg, padding, batch, crop, steps, threads, queue):
    """Child process: peak resident memory growth (MiB) over the post-import baseline during `steps` steps."""
    torch.set_num_threads(threads)
    base = _proc_status_mib("VmRSS")
    info = DistInfo(0, 1, 0, torch.device("cpu"))
    Runner(cfg, padding, info, batch, crop).step(steps)
    queue.put(_proc_status_mib("VmHWM") - base)


def cpu_peak_memory(cfg, padding, batch, crop, steps) -> float | None:
    if not os.path.exists("/proc/self/status"):
        return None
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_cpu_peak_child, args=(cfg, padding, batch, crop, steps, torch.get_num_threads(), queue))
    proc.start()
    value = queue.get()
    proc.join()
    return value


def main(args):
    cfg = load_config(args.config, args.opts)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = init_distributed(cfg["train"]["device"])
    set_determinism(False)  # cuDNN autotuning, as in a real run
    batch = args.batch or max(1, cfg["train"]["batch_size"] // info.world_size)
    crop = args.crop or cfg["data"]["crop_size"]
    runners = {v: Runner(cfg, v, info, batch, crop) for v in args.variants}
    gpu_peak: dict[str, float | None] = {}
    for name, runner in runners.items():
        if info.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(info.device)
        runner.step(args.warmup)
        if info.device.type == "cuda":
            gpu_peak[name] = torch.cuda.max_memory_allocated(info.device) / 2 ** 20
    rounds: dict[str, list[float]] = {v: [] for v in args.variants}
    for _ in range(args.rounds):
        for name, runner in runners.items():
            rounds[name].append(runner.step(args.iters))
    barrier()
    if not info.is_main:
        cleanup_distributed()
        return
    if info.device.type == "cuda":
        peak = gpu_peak
    elif args.no_memory:
        peak = {}
    else:
        del runners  # free the parent's copies before measuring children
        peak = {v: cpu_peak_memory(cfg, v, batch, crop, max(2, args.warmup)) for v in args.variants}

    results = {"config": args.config, "device": str(info.device) if info.device.type == "cpu" else
               torch.cuda.get_device_name(info.device), "world_size": info.world_size, "batch_per_process": batch,
               "crop": crop, "amp": cfg["train"]["amp"], "sync_bn": cfg["train"]["sync_bn"] and info.distributed
               and info.device.type == "cuda", "encoder": cfg["model"]["encoder"], "iters_per_round": args.iters,
               "rounds": args.rounds, "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
               "variants": {}}
    for name in args.variants:
        sec = statistics.median(rounds[name]) / args.iters
        results["variants"][name] = {"it_s": 1 / sec, "img_s": batch * info.world_size / sec, "sec_per_it": sec,
                                     "peak_mem_mib": peak.get(name)}
    ref = results["variants"][args.variants[0]]
    mem_kind = "CUDA allocator peak" if info.device.type == "cuda" else "CPU peak RSS growth"
    print(f"\n{results['encoder']} DeepLabV3+, crop {crop}, batch {batch} x {info.world_size} process(es), "
          f"amp={results['amp']}, device {results['device']}; median of {args.rounds} rounds x {args.iters} its")
    print(f"{'padding':<10}{'it/s':>9}{'img/s':>9}{'time ratio':>12}{'peak MiB':>11}{'mem ratio':>11}   ({mem_kind})")
    for name, r in results["variants"].items():
        r["time_ratio"] = r["sec_per_it"] / ref["sec_per_it"]
        r["mem_ratio"] = r["peak_mem_mib"] / ref["peak_mem_mib"] if r["peak_mem_mib"] and ref["peak_mem_mib"] else None
        mem = f"{r['peak_mem_mib']:>11.1f}{r['mem_ratio']:>11.3f}" if r["mem_ratio"] is not None else f"{'-':>22}"
        print(f"{name:<10}{r['it_s']:>9.3f}{r['img_s']:>9.2f}{r['time_ratio']:>12.3f}{mem}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {args.json}")
    cleanup_distributed()


if __name__ == "__main__":
    main(parse_args())
