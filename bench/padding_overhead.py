"""Cost of partial padding over zero padding on torchvision ResNet-50 (and VGG16-BN), interleaved.

Variants, timed in turn on the same weights so drift in machine speed hits all of them alike:
  zeros    torchvision's model as is
  partial  seg.nn.convert_padding(model, "partial") with the default re-weighting ("auto": border bands on
           CPU; on CUDA a cached full-size map for small outputs, bands otherwise), plan cached per (H, W)
  bands    partial, always re-weighting the border bands in place (O(perimeter) memory traffic)
  fullmap  partial, always multiplying by the cached full-size ratio map (one elementwise pass)
           (one such variant per strategy of seg.nn.REWEIGHT_STRATEGIES besides "auto")
  naive    the reference implementation's scheme: a full (B, 1, H, W) ratio map, multiplied over the
           whole output, recomputed whenever the input shape (batch size included) changes

Scenarios: forward (eval, no grad), forward+backward (train), alternating batch sizes (a full batch then
a short last batch, as at the end of an epoch or with tiles), and the first call at a new input size.
Prints medians and ratios to zeros; `--json` writes them too.

    python bench/padding_overhead.py --size 2 3 512 1024 --repeats 5
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18, resnet50, vgg16_bn

from seg.cli import device_arg
from seg.engine.distributed import resolve_device
from seg.nn import REWEIGHT_STRATEGIES, convert_padding, has_padding, reweight_strategies, set_reweight_strategy

ARCHS = {"resnet50": resnet50, "vgg16_bn": vgg16_bn, "resnet18": resnet18}
#: fixed strategies, each timed as its own variant ("partial" is "auto")
STRATEGIES = tuple(s for s in REWEIGHT_STRATEGIES if s != "auto")
VARIANTS = ("zeros", "partial", *STRATEGIES, "naive")


def variants(device: torch.device) -> tuple[str, ...]:
    """The variants of :data:`VARIANTS` that run on ``device`` (the "border" kernel needs a CUDA GPU)."""
    runnable = reweight_strategies(device)
    return tuple(v for v in VARIANTS if v not in STRATEGIES or v in runnable)


class NaivePartialConv2d(nn.Conv2d):
    """Reference-style partial padding: full-size ratio map, rebuilt on any input-shape change."""

    def forward(self, x):
        if getattr(self, "_last_shape", None) != tuple(x.shape):
            self._last_shape = tuple(x.shape)
            with torch.no_grad():
                ones = torch.ones(x.shape[0], 1, *x.shape[2:], dtype=x.dtype, device=x.device)
                kernel = torch.ones(1, 1, *self.kernel_size, dtype=x.dtype, device=x.device)
                taps = F.conv2d(ones, kernel, None, self.stride, self.padding, self.dilation)
                ratio = kernel.numel() / (taps + 1e-8)
                self._ratio = ratio * taps.clamp(0, 1)
        raw = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if self.bias is None:
            return raw * self._ratio
        b = self.bias.view(1, -1, 1, 1)
        return (raw - b) * self._ratio + b


def naive_copy(model: nn.Module) -> nn.Module:
    for sub in model.modules():
        if type(sub) is nn.Conv2d and has_padding(sub):
            sub.__class__ = NaivePartialConv2d
    return model


class WithStrategy(nn.Module):
    """Runs the wrapped partial-padding model under one re-weighting strategy (forward; backward follows
    the graph that forward built)."""

    def __init__(self, model: nn.Module, strategy: str):
        super().__init__()
        self.model, self.strategy = model, strategy

    def forward(self, x):
        old = set_reweight_strategy(self.strategy)
        try:
            return self.model(x)
        finally:
            set_reweight_strategy(old)


def build_variants(arch: str, names=("zeros", "partial", "naive")) -> dict[str, nn.Module]:
    """The same randomly initialised ``arch`` once per variant name in ``names`` (see the module doc)."""
    models = {}
    for name in names:
        torch.manual_seed(0)
        model = ARCHS[arch]()
        if name == "naive":
            naive_copy(model)
        elif name != "zeros":
            convert_padding(model, "partial")
            if name in STRATEGIES:
                model = WithStrategy(model, name)
        models[name] = model
    return models


def clock(fn, device: torch.device) -> float:
    """Seconds ``fn()`` takes: CUDA events on a GPU (device time, no host-side sync jitter), else wall time."""
    if device.type == "cuda":
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        begin.record()
        fn()
        end.record()
        end.synchronize()
        return begin.elapsed_time(end) / 1000
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def forward_step(model, x):
    model.eval()
    with torch.no_grad():
        model(x)


def train_step(model, x):
    model.train()
    model.zero_grad(set_to_none=True)
    model(x).float().sum().backward()


def measure(models, scenario, shape, repeats, device, warmup=1, channels_last=False) -> dict[str, list[float]]:
    """Seconds per scenario step for each variant, interleaved repeat by repeat (inputs in channels_last
    memory format with ``channels_last``; the models are expected in the same format)."""
    times: dict[str, list[float]] = {name: [] for name in models}
    b, c, h, w = shape
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def randn(*size):
        return torch.randn(*size, device=device).contiguous(memory_format=memory_format)

    for rep in range(-warmup, repeats):
        # reverse the order every other repeat, so no variant always runs right after another
        order = list(models.items()) if rep % 2 == 0 else list(models.items())[::-1]
        if scenario == "first_call":
            # a size no variant has seen. The library's own per-size set-up (cuDNN / oneDNN kernel choice) is
            # shared by all variants, so zeros pays it once, untimed; what is timed is each variant's own
            # first-call work at the new size (partial: building its plans; naive: its ratio map)
            new = randn(b, c, h + 32 * (rep + warmup + 1), w)
            forward_step(models["zeros"], new)
        for name, model in order:
            if scenario == "first_call":
                t = clock(lambda model=model, new=new: forward_step(model, new), device)
            elif scenario == "alternating_batch":
                full, short = randn(b, c, h, w), randn(max(1, b // 2), c, h, w)
                t = clock(lambda model=model, full=full, short=short: (forward_step(model, full),
                                                                       forward_step(model, short)), device)
            else:
                step = forward_step if scenario == "forward" else train_step
                x = randn(b, c, h, w)
                t = clock(lambda step=step, model=model, x=x: step(model, x), device)
            if rep >= 0:
                times[name].append(t)
    return times


def summarise(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Median seconds, and the median over repeats of each variant's time / zeros' time in that repeat.

    The per-repeat ratio is the figure to read: within a repeat every variant ran the same input (in
    first_call, a size that changes from repeat to repeat), back to back.
    """
    zeros = times["zeros"]
    return {name: {"median_s": statistics.median(ts),
                   "ratio": statistics.median(t / z for t, z in zip(ts, zeros))}
            for name, ts in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", default=["resnet50"], choices=sorted(ARCHS))
    parser.add_argument("--variants", nargs="+", default=["zeros", "partial", "naive"], choices=VARIANTS,
                        help="ratios are to zeros, which is always measured")
    parser.add_argument("--size", nargs=4, type=int, default=[2, 3, 192, 384], metavar=("B", "C", "H", "W"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 = steadiest numbers)")
    parser.add_argument("--device", default="cpu", type=device_arg, help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--scenarios", nargs="+",
                        default=["forward", "forward_backward", "alternating_batch", "first_call"])
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    args.variants = ["zeros"] + [v for v in args.variants if v != "zeros"]
    torch.set_num_threads(args.threads)

    device = resolve_device(args.device, "--device")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{platform.processor() or platform.machine()}, {args.threads} thread(s)"
    results = {"machine": f"{where}, torch {torch.__version__}", "size": args.size, "repeats": args.repeats,
               "archs": {}}
    print(f"{results['machine']}; input {tuple(args.size)}; {args.repeats} interleaved repeats; median seconds, "
          "median of per-repeat ratios")
    others = [v for v in args.variants if v != "zeros"]
    print(f"{'arch':10s} {'scenario':18s} " + " ".join(f"{v:>9s}" for v in args.variants) + " " +
          " ".join(f"{v + '/zeros':>14s}" for v in others))
    for arch in args.arch:
        models = {name: m.to(device) for name, m in build_variants(arch, args.variants).items()}
        results["archs"][arch] = {}
        for scenario in args.scenarios:
            summary = summarise(measure(models, scenario, args.size, args.repeats, device))
            results["archs"][arch][scenario] = summary
            print(f"{arch:10s} {scenario:18s} " + " ".join(f"{summary[v]['median_s']:9.4f}" for v in args.variants)
                  + " " + " ".join(f"{summary[v]['ratio']:14.4f}" for v in others), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
