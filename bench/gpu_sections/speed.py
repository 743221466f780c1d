"""Sections "table1", "train_speed" and "compile": the cost of partial padding relative to zero padding.

Ratios are partial / zeros time, interleaved variant by variant (bench/padding_overhead.py), medians of
per-repeat ratios; CUDA events on a GPU, wall time on the CPU.
"""
from __future__ import annotations

import copy
import os
import statistics
import time

import padding_overhead
import torch
import train_speed
from torch._dynamo.testing import CompileCounterWithBackend
from torch._dynamo.utils import counters

from seg.config import load_config
from seg.engine import DistInfo
from seg.nn import COMPILE_PATHS, convert_padding, set_compile_path

from .report import Run, SectionResult, Table, cudnn_benchmark, holds, within

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: partial / zeros goals (issue 20): steady state, first call at a new size, DeepLabV3+ training time
GOALS = {"steady": 1.01, "first_call": 1.05, "train": 1.02}
PAPER_TABLE1 = {"steady": 1.0339, "first_call": 1.297}  # ResNet-50 on a V100 (arXiv 1811.11718, Table 1)
LAYOUTS = {"NCHW": torch.contiguous_format, "channels_last": torch.channels_last}

TABLE1_SIZES = {"gpu": dict(archs=["resnet50", "vgg16_bn"], size=(64, 3, 224, 224), repeats=10, first_repeats=5,
                            warmup=2),
                "dry": dict(archs=["resnet18"], size=(2, 3, 64, 64), repeats=1, first_repeats=1, warmup=0)}
TRAIN_SIZES = {"gpu": dict(configs={"resnet50": "configs/cityscapes/deeplabv3plus_r50_zeros_896.yaml",
                                    "wider_resnet38": "configs/cityscapes/deeplabv3plus_wrn38_zeros_736.yaml"},
                           crop=512, batch=8, amp="bf16", warmup=2, iters=5, rounds=3),
               "dry": dict(configs={"resnet18": "configs/demo/deeplabv3plus_r18_zeros.yaml"}, crop=64, batch=2,
                           amp="none", warmup=1, iters=1, rounds=1)}
#: graphs are counted over five input sizes with a cheap backend; time is measured with ``time_backend``
COMPILE_SIZES = {"gpu": dict(count_arch="resnet50", count_backend="aot_eager", count_batch=8,
                             count_sizes=[(160, 160), (192, 224), (224, 224), (256, 288), (288, 320)],
                             time_archs=["resnet50", "vgg16_bn"], time_backend="inductor", size=(64, 3, 224, 224),
                             repeats=10, warmup=2, arch_s=60),
                 "dry": dict(count_arch="resnet18", count_backend="eager", count_batch=1,
                             count_sizes=[(32, 40), (40, 48), (48, 56)],
                             time_archs=["resnet18"], time_backend="eager", size=(2, 3, 64, 64), repeats=1,
                             warmup=1, arch_s=0)}


def table1(run: Run) -> SectionResult:
    """The paper's Table 1 (fp32, TF32 allowed, cuDNN autotuning off: it would charge the tuning of a new size to
    whichever variant meets it first) for every variant of padding_overhead, in both memory layouts."""
    sizes, device = run.sizes(TABLE1_SIZES), run.device
    variants = padding_overhead.variants(device)
    results: dict = {}
    rows, checks = [], []
    with cudnn_benchmark(False):
        for arch in sizes["archs"]:
            for layout, memory_format in LAYOUTS.items():
                models = {n: m.to(device).to(memory_format=memory_format)
                          for n, m in padding_overhead.build_variants(arch, variants).items()}
                for scenario in ("forward", "forward_backward", "first_call"):
                    repeats = sizes["first_repeats" if scenario == "first_call" else "repeats"]
                    summary = padding_overhead.summarise(padding_overhead.measure(
                        models, scenario, sizes["size"], repeats, device, sizes["warmup"],
                        channels_last=layout == "channels_last"))
                    results.setdefault(f"{arch}/{layout}", {})[scenario] = summary
                    goal = GOALS["first_call" if scenario == "first_call" else "steady"]
                    rows.append([arch, layout, scenario, 1e3 * summary["zeros"]["median_s"]]
                                + [summary[v]["ratio"] for v in variants[1:]]
                                + [goal, "yes" if summary["partial"]["ratio"] <= goal else "no"])
                    checks.append(holds(f"{arch} {layout} {scenario}: every variant timed",
                                        all(s["median_s"] > 0 for s in summary.values())))
                del models
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    b, c, h, w = sizes["size"]
    table = Table(f"Table 1 on this device: batch {b} at {h}x{w}, fp32 (TF32 allowed), time ratio to zero padding "
                  f"(median of per-repeat ratios; first_call = a new input size each repeat). Paper, ResNet-50 on a "
                  f"V100: {PAPER_TABLE1['steady']} after the first iteration, {PAPER_TABLE1['first_call']} on the "
                  "first.", ["arch", "layout", "scenario", "zeros ms", *(f"{v} (auto)" if v == "partial" else v
                                                                       for v in variants[1:]), "goal", "partial meets"],
                  rows)
    return SectionResult("table1", results=results, checks=checks, tables=[table])


def training_speed(run: Run) -> SectionResult:
    """DeepLabV3+ training img/s, zeros vs partial, NCHW and channels_last, one fixed batch (no data loading),
    the engine's own train step, cuDNN autotuning on; median of interleaved rounds."""
    sizes, device = run.sizes(TRAIN_SIZES), run.device
    info = DistInfo(0, 1, 0, device)
    rows, results = [], {}
    with cudnn_benchmark(True):
        for encoder, config in sizes["configs"].items():
            for layout in LAYOUTS:
                cfg = load_config(os.path.join(ROOT, config), ["model.pretrained=null", f"train.amp={sizes['amp']}",
                                                               f"train.device={device.type}"])
                runners = {p: train_speed.Runner(cfg, p, info, sizes["batch"], sizes["crop"],
                                                 layout == "channels_last") for p in ("zeros", "partial")}
                for runner in runners.values():
                    runner.step(sizes["warmup"])
                times: dict[str, list[float]] = {p: [] for p in runners}
                for _ in range(sizes["rounds"]):
                    for p, runner in runners.items():
                        times[p].append(runner.step(sizes["iters"]) / sizes["iters"])
                zeros, partial = (statistics.median(times[p]) for p in ("zeros", "partial"))
                batch = sizes["batch"]
                results[f"{encoder}/crop{sizes['crop']}/b{batch}/{layout}"] = {
                    "zeros_img_s": batch / zeros, "partial_img_s": batch / partial, "ratio": partial / zeros}
                rows.append([encoder, layout, batch / zeros, batch / partial, partial / zeros,
                             "yes" if partial / zeros <= GOALS["train"] else "no"])
                del runners
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    table = Table(f"DeepLabV3+ training speed, amp {sizes['amp']}, crop {sizes['crop']}, batch {sizes['batch']}, one "
                  f"fixed batch (no data loading), cuDNN autotuning on; median of {sizes['rounds']} interleaved "
                  f"rounds x {sizes['iters']} steps", ["encoder", "layout", "zeros img/s", "partial img/s",
                                                       "time partial/zeros", f"within {GOALS['train']}"], rows)
    return SectionResult("train_speed", results=results, tables=[table])


class CompiledWithPath(torch.nn.Module):
    """``torch.compile(model, **options)`` run with PartialConv2d's compile ``path`` (:func:`seg.nn.set_compile_path`).
    Dynamo reads the choice while tracing and guards on it: setting it around every call keeps each model on its
    own graphs while models of both paths run interleaved."""

    def __init__(self, model: torch.nn.Module, path: str, **options):
        super().__init__()
        self.path, self.compiled = path, torch.compile(model, **options)

    def forward(self, x):
        old = set_compile_path(self.path)
        try:
            return self.compiled(x)
        finally:
            set_compile_path(old)


def count_graphs(model: torch.nn.Module, backend: str, shapes, device, path: str = "plain") -> dict:
    """Compile ``model`` (compile ``path``) with a graph-counting ``backend``; forward + backward at every
    (B, C, H, W) of ``shapes``. Returns the graphs compiled (the first, then one per recompile) and dynamo's
    graph-break count."""
    torch._dynamo.reset()
    counters.clear()
    counter = CompileCounterWithBackend(backend)
    compiled = CompiledWithPath(model.to(device).train(), path, backend=counter)
    for shape in shapes:
        compiled(torch.randn(*shape, device=device)).float().sum().backward()
    out = {"graphs": counter.frame_count, "graph_breaks": sum(counters["graph_break"].values())}
    torch._dynamo.reset()
    return out


#: the compile section's variants: zero padding, then partial padding on each compile path (seg.nn.COMPILE_PATHS)
COMPILE_VARIANTS = ("zeros", *(f"partial/{path}" for path in COMPILE_PATHS))


def compile_check(run: Run) -> SectionResult:
    """torch.compile: graph breaks and graphs over five input sizes, zeros vs partial on each compile path (plain
    ops from seg.nn.traced, or the registered op seg::partial_conv2d), then the forward+backward time ratio of
    both paths with ``time_backend``, side by side."""
    sizes, device = run.sizes(COMPILE_SIZES), run.device
    torch.manual_seed(0)
    zeros = padding_overhead.ARCHS[sizes["count_arch"]]()
    partial = convert_padding(copy.deepcopy(zeros), "partial")
    shapes = [(sizes["count_batch"], 3, h, w) for h, w in sizes["count_sizes"]]
    counts = {"zeros": count_graphs(zeros, sizes["count_backend"], shapes, device)}
    counts.update({f"partial/{path}": count_graphs(partial, sizes["count_backend"], shapes, device, path)
                   for path in COMPILE_PATHS})
    checks = []
    for name in COMPILE_VARIANTS[1:]:
        checks += [within(f"{sizes['count_arch']} {name}: graph breaks", counts[name]["graph_breaks"], 0),
                   within(f"{sizes['count_arch']} {name}: graphs over {len(shapes)} sizes, at most zero padding's "
                          f"({counts['zeros']['graphs']})", counts[name]["graphs"], counts["zeros"]["graphs"])]
    count_table = Table(f"Graphs compiled over {len(shapes)} input sizes ({sizes['count_backend']} backend, forward "
                        f"+ backward, {sizes['count_arch']}): the first graph, then one per recompile",
                        ["padding", "graphs", "graph breaks"],
                        [[p, c["graphs"], c["graph_breaks"]] for p, c in counts.items()])
    rows, results, note = [], {"counts": counts}, ""
    for arch in sizes["time_archs"]:
        if run.deadline - time.monotonic() < sizes["arch_s"]:
            note = f"stopped before timing {arch}: time budget"
            break
        built = padding_overhead.build_variants(arch, ("zeros", "partial"))
        options = {"backend": sizes["time_backend"], "dynamic": False}
        models = {"zeros": CompiledWithPath(built["zeros"].to(device), "plain", **options)}
        models.update({f"partial/{path}": CompiledWithPath(copy.deepcopy(built["partial"]).to(device), path, **options)
                       for path in COMPILE_PATHS})
        summary = padding_overhead.summarise(padding_overhead.measure(
            models, "forward_backward", sizes["size"], sizes["repeats"], device, warmup=sizes["warmup"]))
        results[arch] = summary
        ratios = [summary[name]["ratio"] for name in COMPILE_VARIANTS[1:]]
        rows.append([arch, *(1e3 * summary[name]["median_s"] for name in COMPILE_VARIANTS), *ratios,
                     " / ".join("yes" if r <= GOALS["steady"] else "no" for r in ratios)])
        del models, built
        torch._dynamo.reset()
    b, c, h, w = sizes["size"]
    time_table = Table(f"torch.compile (backend {sizes['time_backend']}, static shapes), forward + backward, batch "
                       f"{b} at {h}x{w}, fp32; partial on each compile path",
                       ["arch", *(f"{name} ms" for name in COMPILE_VARIANTS),
                        *(f"{name} / zeros" for name in COMPILE_VARIANTS[1:]),
                        f"meets <= {GOALS['steady']} ({' / '.join(COMPILE_PATHS)})"], rows)
    return SectionResult("compile", results=results, checks=checks, tables=[count_table, time_table], note=note)
