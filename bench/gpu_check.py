#!/usr/bin/env python
"""One prepared GPU check: CUDA correctness, the training path, Table 1 on the GPU, evaluation speed.

    python bench/gpu_check.py [--out work_dirs/gpu_check] [--budget-s 450]     # or: make gpu-check
    python bench/gpu_check.py --dry-run        # CPU, tiny sizes: the same code paths, in `make test`

Writes OUT/gpu_check.json and OUT/gpu_check.md (device, driver, torch / CUDA / cuDNN versions, one table
per section; both rewritten after every section, so a cut-off run keeps what it measured) and exits 1
when a correctness check fails or a section raises. Sections, in order of priority; one whose time
estimate no longer fits the budget is skipped and says so:

  correctness  PartialConv2d forward and gradients on the device against the float64 CPU reference
               (fp32 with TF32 off; bf16 / fp16 autocast within stated tolerances, ratio kept in fp32), both
               re-weighting strategies, mask mode; convert_padding round trip on ResNet-50; one DeepLabV3+
               ResNet-50 training step on the device against the same step on the CPU (fp32)
  layer_sweep  one 3x3 conv at growing output sizes: border bands in place vs the cached full-map multiply;
               the largest output size where the full map wins sets CUDA_FULLMAP_MAX_NUMEL for the rest
  table1       the paper's Table 1: VGG16-BN and ResNet-50, batch 64 at 224x224, forward and forward+backward,
               steady state and first call, zeros / partial / bands / fullmap / naive reference, CUDA events,
               interleaved, medians of per-repeat ratios
  train_cli    tools/train.py under torchrun --nproc_per_node 1 (NCCL, DDP, SyncBatchNorm), crop 512:
               bf16, then fp16 + GradScaler killed after a checkpoint and continued with --resume auto
  train_speed  training img/s zeros vs partial, DeepLabV3+ ResNet-50 and WideResNet-38, channels_last or not
  eval_speed   WideResNet-38 DeepLabV3+ at 1024x2048: regular / tile 1024 / overlap 1/3, time outside the net
  data         DataLoader samples/s by worker count at the paper's crop, against what one GPU consumes
  compile      torch.compile (inductor): ResNet-50 / VGG16-BN, zeros vs partial, forward and forward+backward

Timing is in fp32 for Table 1 (the paper's setting), cuDNN autotuning off there (it would charge the tuning
of a new size to whichever variant meets it first) and on for training. Goals it reports against:
partial/zeros <= 1.01 steady state and <= 1.10 first call (paper, V100: 1.034 and 1.297); DeepLabV3+
training img/s within 3% of zero padding.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import glob
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

import torch

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path[:0] = [BENCH, os.path.join(ROOT, "tests")]  # sibling bench scripts; the float64 reference of the tests

import padding_overhead  # noqa: E402
import train_speed  # noqa: E402
from test_partial_conv import grid_cases, naive_partial_conv  # noqa: E402

import seg.nn.partial_conv as pc  # noqa: E402
from seg.config import load_config  # noqa: E402
from seg.data.demo import generate_demo_dataset  # noqa: E402
from seg.engine import DistInfo, build_criterion, train_step  # noqa: E402
from seg.models import DeepLabV3Plus  # noqa: E402
from seg.nn import PartialConv2d, convert_padding, set_reweight_strategy  # noqa: E402

GOALS = {"steady": 1.01, "first_call": 1.10, "train": 1.03}
PAPER_TABLE1 = {"steady": 1.0339, "first_call": 1.297}  # ResNet-50 on a V100 (arXiv 1811.11718, Table 1)
#: Tolerances against the float64 reference, relative to the largest reference magnitude.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}

# sizes per mode: the GPU run, and a dry run small enough for a 2-core CPU inside the test suite
SIZES = {
    "gpu": dict(
        grid=96, step_size=(2, 3, 129, 161), step_encoder="resnet50", convert_arch="resnet50",
        channels_last=(False, True),
        table1_archs=["vgg16_bn", "resnet50"], table1_size=(64, 3, 224, 224), repeats=10, first_repeats=5,
        sweep=[(1, 64, 14), (4, 64, 28), (8, 64, 56), (16, 64, 56), (32, 64, 112), (64, 64, 112), (64, 128, 224)],
        train_crop=512, train_batch=8, train_iters=20, train_amps=("bf16", "fp16"), data_images=16,
        data_size=(512, 1024), speed_iters=5, speed_rounds=3, speed_amp="bf16", paper_crop=(896, 4),
        speed_encoders={"resnet50": "configs/cityscapes/deeplabv3plus_r50_zeros_896.yaml",
                        "wider_resnet38": "configs/cityscapes/deeplabv3plus_wrn38_zeros_736.yaml"},
        eval_args=["--encoder", "wider_resnet38", "--output-stride", "8", "--height", "1024", "--width", "2048",
                   "--tile-size", "1024", "--images", "3", "--repeats", "3", "--workers", "4"],
        data_args=["--samples", "48", "--images", "8", "--gen-workers", "8", "--workers", "0", "1", "2", "4", "8",
                   "--batch-size", "4"],
        compile_archs=["resnet50", "vgg16_bn"]),
    "dry": dict(
        grid=6, step_size=(2, 3, 65, 81), step_encoder="resnet18", convert_arch="resnet18", channels_last=(False,),
        table1_archs=["resnet18"], table1_size=(2, 3, 64, 64), repeats=1, first_repeats=1,
        sweep=[(1, 8, 8), (2, 8, 16)],
        train_crop=64, train_batch=2, train_iters=4, train_amps=("fp16",), data_images=4,
        data_size=(64, 128), speed_iters=1, speed_rounds=1, speed_amp="none", paper_crop=None,
        speed_encoders={"resnet18": "configs/demo/deeplabv3plus_r18_zeros.yaml"},
        eval_args=["--encoder", "resnet18", "--height", "64", "--width", "128", "--tile-size", "64",
                   "--images", "1", "--repeats", "1"],
        data_args=["--samples", "2", "--images", "2", "--height", "64", "--crop", "32", "--workers", "0",
                   "--batch-size", "1"],
        compile_archs=[]),
}
# rough seconds each section needs on an H100/H200-class GPU (checked against the budget before it starts)
ESTIMATE_S = {"correctness": 40, "layer_sweep": 20, "table1": 60, "train_cli": 100, "train_speed": 60,
              "eval_speed": 60, "data": 45, "compile": 60}


# ------------------------------------------------------------------------------------------- report
class Report:
    """Results of every section, written as JSON and Markdown after each one (a cut-off run keeps them)."""

    def __init__(self, out_dir: str, env: dict):
        self.out_dir, self.env, self.sections = out_dir, env, {}
        os.makedirs(out_dir, exist_ok=True)

    def add(self, name: str, status: str, seconds: float, results=None, checks=(), tables=(), note: str = ""):
        self.sections[name] = {"status": status, "seconds": round(seconds, 1), "results": results,
                               "checks": list(checks), "tables": list(tables), "note": note}
        self.write()

    @property
    def failed(self) -> list[str]:
        return [f"{name}: {c['name']}" for name, s in self.sections.items() for c in s["checks"] if not c["ok"]] + \
            [f"{name}: {s['note']}" for name, s in self.sections.items() if s["status"] == "error"]

    def write(self) -> None:
        doc = {"environment": self.env, "sections": self.sections, "failed": self.failed}
        _write_atomic(os.path.join(self.out_dir, "gpu_check.json"), json.dumps(doc, indent=1, default=str))
        _write_atomic(os.path.join(self.out_dir, "gpu_check.md"), self.markdown())

    def markdown(self) -> str:
        e = self.env
        lines = [f"### GPU check on {e['device']} ({e['date']})", "",
                 f"Driver {e['driver']}, torch {e['torch']}, CUDA {e['cuda']}, cuDNN {e['cudnn']}, "
                 f"Python {e['python']}, {e['cpu_count']} CPU cores. `python bench/gpu_check.py` "
                 f"({'dry run' if e['dry_run'] else 'full run'}), {e['elapsed_s']:.0f} s.", ""]
        for name, s in self.sections.items():
            lines += [f"#### {name}: {s['status']} ({s['seconds']:.0f} s)", ""]
            if s["note"]:
                lines += [s["note"], ""]
            if s["checks"]:
                lines += ["| check | value | limit | ok |", "|---|---|---|---|"]
                lines += [f"| {c['name']} | {_fmt(c['value'])} | {_fmt(c['limit'])} | {'yes' if c['ok'] else 'NO'} |"
                          for c in s["checks"]] + [""]
            for title, header, rows in s["tables"]:
                lines += [f"{title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows] + [""]
        return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    return "" if v is None else str(v)


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def check(name: str, value: float, limit: float) -> dict:
    return {"name": name, "value": value, "limit": limit, "ok": bool(value <= limit)}


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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------- correctness
def _max_rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    scale = want.abs().max().item() or 1.0
    return (got.detach().cpu().double() - want).abs().max().item() / scale


def layer_errors(case, device, dtype, strategy, masked=False) -> tuple[float, float]:
    """(forward error, worst gradient error) of one grid case on `device` against the float64 CPU reference.

    fp32 runs the layer in fp32; bf16 / fp16 run it in fp32 under autocast (as training does)."""
    k, s, d, padding, size, g, bias = case
    torch.manual_seed(0)
    conv = PartialConv2d(g[0], g[1], k, stride=s, padding=padding, dilation=d, groups=g[2], bias=bias).double()
    x = torch.randn(2, g[0], *size, dtype=torch.float64, requires_grad=True)
    mask = (torch.rand(1, 1, *size) > 0.3).double() if masked else None
    want = naive_partial_conv(x, conv.weight, conv.bias, s, padding, d, g[2], mask=mask)[0]
    gy = torch.randn_like(want)
    leaves = [x] + [p for p in (conv.weight, conv.bias) if p is not None]
    want_grads = torch.autograd.grad(want, leaves, gy)
    dev_conv = copy.deepcopy(conv).float().to(device)
    dev_x = x.detach().float().to(device).requires_grad_()
    old = set_reweight_strategy(strategy)
    try:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            y = dev_conv(dev_x, mask.float().to(device))[0] if masked else dev_conv(dev_x)
        dev_leaves = [dev_x] + [p for p in (dev_conv.weight, dev_conv.bias) if p is not None]
        grads = torch.autograd.grad(y.float(), dev_leaves, gy.float().to(device))
    finally:
        set_reweight_strategy(old)
    return _max_rel_err(y, want), max(_max_rel_err(a, b) for a, b in zip(grads, want_grads))


def section_correctness(device, sizes) -> dict:
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32 here
    dtypes = [torch.float32, torch.bfloat16] + ([torch.float16] if device.type == "cuda" else [])
    checks, rows = [], []
    cases = grid_cases(sizes["grid"], seed=7)
    for dtype in dtypes:
        for strategy in ("bands", "fullmap"):
            errs = [layer_errors(c, device, dtype, strategy) for c in cases]
            fwd, grad = max(e[0] for e in errs), max(e[1] for e in errs)
            rows.append([str(dtype).replace("torch.", ""), strategy, len(cases), fwd, grad, TOLERANCE[dtype]])
            checks += [check(f"PartialConv2d {rows[-1][0]} {strategy} forward", fwd, TOLERANCE[dtype]),
                       check(f"PartialConv2d {rows[-1][0]} {strategy} gradients", grad, 4 * TOLERANCE[dtype])]
    masked = max(max(layer_errors(c, device, torch.float32, "bands", masked=True)) for c in cases[:8])
    checks.append(check("PartialConv2d fp32 mask mode, forward and gradients", masked, 4 * TOLERANCE[torch.float32]))
    checks += conversion_checks(device, sizes["convert_arch"])
    checks += training_step_checks(device, sizes)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    table = ("Layer vs the float64 CPU reference (max error / max |reference|; gradient limit = 4 x forward limit)",
             ["dtype", "strategy", "cases", "forward err", "gradient err", "forward limit"], rows)
    return {"checks": checks, "tables": [table]}


def conversion_checks(device, arch: str) -> list[dict]:
    """torchvision `arch` zeros -> partial -> zeros on the device: same parameters, exact round trip, partial
    close to the naive full-map reference layer."""
    torch.manual_seed(0)
    model = padding_overhead.ARCHS[arch]().to(device).eval()
    naive = padding_overhead.naive_copy(copy.deepcopy(model))
    x = torch.randn(2, 3, 97, 131, device=device)
    ptrs = {k: v.data_ptr() for k, v in model.state_dict().items()}
    torch.backends.cudnn.deterministic = True
    with torch.no_grad():
        before = model(x)
        partial = convert_padding(model, "partial")(x)
        after = convert_padding(model, "zeros")(x)
        reference = naive(x)
    torch.backends.cudnn.deterministic = False
    same_params = ptrs == {k: v.data_ptr() for k, v in model.state_dict().items()}
    return [check("convert_padding round trip: max |zeros - zeros after partial|", (after - before).abs().max().item(),
                  0.0),
            check("convert_padding keeps every parameter tensor (0 = yes)", float(not same_params), 0.0),
            check(f"{arch} partial vs naive reference layer (rel.)", _max_rel_err(partial, reference.cpu().double()),
                  1e-3)]


def training_step_checks(device, sizes) -> list[dict]:
    """One SGD step of DeepLabV3+ (partial padding) on `device` against the same step on the CPU, fp32."""
    torch.manual_seed(0)
    cpu_model = DeepLabV3Plus(sizes["step_encoder"], 19, 8, "partial").train()
    dev_model = copy.deepcopy(cpu_model).to(device)
    start = {k: v.detach().double().clone() for k, v in cpu_model.state_dict().items()}
    b, c, h, w = sizes["step_size"]
    images, targets = torch.randn(b, c, h, w), torch.randint(0, 19, (b, h, w))
    targets[:, :8] = 255
    results = []
    for model, dev in ((cpu_model, torch.device("cpu")), (dev_model, device)):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        scaler = torch.amp.GradScaler(dev.type, enabled=False)
        criterion = build_criterion({"class_weights": None, "ignore_index": 255}, dev)
        loss = train_step(model, images.to(dev), targets.to(dev), criterion, optimizer, scaler, None)
        results.append((loss.item(), {k: v.detach().cpu().double() for k, v in model.state_dict().items()}))
    (cpu_loss, cpu_state), (dev_loss, dev_state) = results
    keys = [k for k, v in cpu_state.items() if v.is_floating_point()]
    update_err = (torch.cat([(dev_state[k] - cpu_state[k]).flatten() for k in keys]).norm()
                  / torch.cat([(cpu_state[k] - start[k]).flatten() for k in keys]).norm()).item()

    def rel(k):
        return ((dev_state[k] - cpu_state[k]).norm() / (cpu_state[k].norm() + 1e-12)).item()
    worst = max(keys, key=rel)
    return [check(f"DeepLabV3+ {sizes['step_encoder']} step: |loss device - loss CPU| / loss",
                  abs(dev_loss - cpu_loss) / abs(cpu_loss), 1e-4),
            check("DeepLabV3+ step: |update device - update CPU| / |update CPU|, all float tensors", update_err, 1e-3),
            check(f"DeepLabV3+ step: worst single tensor after the step, relative ({worst}; a zero-initialised "
                  "tensor whose one-step update is a heavily cancelling sum amplifies rounding)", rel(worst), 0.05)]


# ------------------------------------------------------------------------------------- layer sweep
def section_layer_sweep(device, sizes) -> dict:
    """Bands vs full map on one 3x3 conv (training step: forward + backward); sets CUDA_FULLMAP_MAX_NUMEL."""
    rows, threshold, fullmap_wins_so_far = [], 0, True
    for batch, channels, hw in sizes["sweep"]:
        conv = PartialConv2d(channels, channels, 3, padding=1).to(device)
        x = torch.randn(batch, channels, hw, hw, device=device, requires_grad=True)
        times = {}
        for _ in range(3 if device.type == "cuda" else 1):
            for strategy in ("bands", "fullmap"):
                set_reweight_strategy(strategy)
                times.setdefault(strategy, []).append(padding_overhead.clock(
                    lambda conv=conv, x=x: [conv(x).sum().backward() for _ in range(5)], device) / 5)
        set_reweight_strategy("auto")
        bands, fullmap = (statistics.median(times[s]) for s in ("bands", "fullmap"))
        numel = batch * channels * hw * hw
        fullmap_wins_so_far = fullmap_wins_so_far and fullmap < bands
        if fullmap_wins_so_far:
            threshold = numel
        rows.append([batch, channels, f"{hw}x{hw}", numel, 1e3 * bands, 1e3 * fullmap, fullmap / bands])
    if device.type == "cuda":
        pc.CUDA_FULLMAP_MAX_NUMEL = threshold  # the rest of this run uses the measured choice
    note = (f"Full map faster than bands up to {threshold} output elements: CUDA_FULLMAP_MAX_NUMEL = {threshold} "
            "for the rest of this run.")
    table = ("One PartialConv2d 3x3, forward + backward, ms (CUDA events, median of 3 x 5 steps)",
             ["batch", "channels", "map", "output numel", "bands ms", "fullmap ms", "fullmap/bands"], rows)
    return {"results": {"threshold": threshold}, "tables": [table], "note": note}


# ------------------------------------------------------------------------------------------ table 1
def section_table1(device, sizes) -> dict:
    torch.backends.cudnn.benchmark = False
    variants = ("zeros", "partial", "bands", "fullmap", "naive")
    results, rows = {}, []
    for arch in sizes["table1_archs"]:
        models = {n: m.to(device) for n, m in padding_overhead.build_variants(arch, variants).items()}
        results[arch] = {}
        for scenario in ("forward", "forward_backward", "first_call"):
            repeats = sizes["first_repeats" if scenario == "first_call" else "repeats"]
            summary = padding_overhead.summarise(padding_overhead.measure(
                models, scenario, sizes["table1_size"], repeats, device, warmup=2 if device.type == "cuda" else 0))
            results[arch][scenario] = summary
            goal = GOALS["first_call" if scenario == "first_call" else "steady"]
            rows.append([arch, scenario, 1e3 * summary["zeros"]["median_s"]]
                        + [summary[v]["ratio"] for v in variants[1:]]
                        + [goal, "yes" if summary["partial"]["ratio"] <= goal else "no"])
        del models
        if device.type == "cuda":
            torch.cuda.empty_cache()
    b, c, h, w = sizes["table1_size"]
    table = (f"Table 1 on this device: batch {b} at {h}x{w}, fp32 (TF32 allowed), time ratio to zero padding "
             f"(median of per-repeat ratios; first_call = a new input size each repeat). Paper, ResNet-50 on a "
             f"V100: {PAPER_TABLE1['steady']} after the first iteration, {PAPER_TABLE1['first_call']} on the first.",
             ["arch", "scenario", "zeros ms", "partial (auto)", "bands", "fullmap", "naive", "goal", "partial meets"],
             rows)
    return {"results": results, "tables": [table]}


def section_compile(device, sizes, deadline: float) -> dict:
    """torch.compile (inductor) zeros vs partial: under compile PartialConv2d multiplies by the full map,
    which inductor can fuse into the neighbouring elementwise work. Stops before an arch that would not fit."""
    rows, results, note = [], {}, ""
    for arch in sizes["compile_archs"]:
        if deadline - time.monotonic() < ESTIMATE_S["compile"]:
            note = f"stopped before {arch}: time budget"
            break
        models = {n: torch.compile(m.to(device)) for n, m in
                  padding_overhead.build_variants(arch, ("zeros", "partial")).items()}
        for scenario in ("forward", "forward_backward"):
            summary = padding_overhead.summarise(padding_overhead.measure(
                models, scenario, sizes["table1_size"], sizes["repeats"], device, warmup=2))
            results[f"{arch}/{scenario}"] = summary
            ratio = summary["partial"]["ratio"]
            rows.append([arch, scenario, 1e3 * summary["zeros"]["median_s"], 1e3 * summary["partial"]["median_s"],
                         ratio, "yes" if ratio <= GOALS["steady"] else "no"])
        del models
    table = ("torch.compile (default mode), steady state, same input as Table 1",
             ["arch", "scenario", "zeros ms", "partial ms", "partial/zeros", "meets <= 1.01"], rows)
    return {"results": results, "tables": [table], "note": note}


# ------------------------------------------------------------------------------------ training path
def _torchrun(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
            os.path.join(ROOT, "tools", "train.py"), *args]


def _descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (Linux /proc): torchrun starts each worker in a session of its own."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL `proc` and all its descendants (as a node failure would), and wait until they are gone."""
    family = [proc.pid] + _descendants(proc.pid)
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    for pid in family[1:]:  # orphans are reaped by init; wait until their locks and files are released
        for _ in range(200):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        break
            except OSError:
                break
            time.sleep(0.05)


def _run_logged(cmd: list[str], log_path: str, timeout: float, kill_when=None) -> tuple[int, str, bool]:
    """Run `cmd` with output to `log_path`; with `kill_when` (a callable polled every 50 ms) SIGKILL it and
    every process it started as soon as that returns True. Returns (exit code, output, killed)."""
    killed = False
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if time.monotonic() > deadline or (kill_when is not None and kill_when()):
                _kill_tree(proc)
                killed = True
                break
            time.sleep(0.05)
    with open(log_path) as f:
        return proc.returncode, f.read(), killed


def _train_opts(data_root: str, sizes: dict, device, amp: str, iters: int) -> list[str]:
    return ["--opts", "model.pretrained=null", f"data.root={data_root}", "data.train_sets=[fine/train]",
            f"data.crop_size={sizes['train_crop']}", f"train.batch_size={sizes['train_batch']}",
            f"train.iterations={iters}", f"train.amp={amp}", "train.log_interval=5",
            f"train.ckpt_interval={iters // 2}",
            "train.val_interval=0", f"data.num_workers={min(8, os.cpu_count() or 1) if device.type == 'cuda' else 0}",
            f"train.device={device.type}", "train.sync_bn=true"]


def _last_metrics(work_dir: str) -> dict:
    rows = []
    with open(os.path.join(work_dir, "metrics.jsonl")) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    train_rows = [r for r in rows if r.get("tag") == "train" and "loss" in r]
    return {"rows": train_rows, "last": train_rows[-1] if train_rows else {}}


def section_train_cli(device, sizes, tmp: str) -> dict:
    h, w = sizes["data_size"]
    data_root = os.path.join(tmp, "data")
    generate_demo_dataset(data_root, train=sizes["data_images"], val=2, height=h, width=w, seed=0,
                          workers=min(8, os.cpu_count() or 1))
    config = ("configs/cityscapes/deeplabv3plus_r50_partial_896.yaml" if device.type == "cuda"
              else "configs/demo/deeplabv3plus_r18_partial.yaml")
    iters, checks, rows, timeout = sizes["train_iters"], [], [], 240
    expect_backend = "nccl" if device.type == "cuda" else "gloo"
    norm = "SyncBatchNorm" if device.type == "cuda" else "BatchNorm2d"
    for amp in sizes["train_amps"]:  # the last one is killed after its first checkpoint and resumed
        work = os.path.join(tmp, f"train_{amp}")
        args = [config, "--work-dir", work, *_train_opts(data_root, sizes, device, amp, iters)]
        ckpts = os.path.join(work, "checkpoints", "iter_*.pth")
        kill = (lambda pattern=ckpts: bool(glob.glob(pattern))) if amp == "fp16" else None
        t0 = time.perf_counter()
        code, out, killed = _run_logged(_torchrun(args), os.path.join(tmp, f"train_{amp}.log"), timeout, kill)
        wall = time.perf_counter() - t0
        line = re.search(r"distributed: (.*)", out)
        checks.append(check(f"{amp}: ran under {expect_backend} with {norm} (0 = yes)",
                            float(not (line and expect_backend in line.group(1) and norm in line.group(1))), 0.0))
        if amp == "fp16":
            checks.append(check("fp16: killed after its first checkpoint (0 = yes)", float(not killed), 0.0))
            code, more, _ = _run_logged(_torchrun(args + ["--resume", "auto"]),
                                        os.path.join(tmp, "train_fp16_resume.log"), timeout)
            resumed = re.search(r"resumed from \S+ at iteration (\d+)", more)
            checks.append(check("fp16: --resume auto continued from the killed run's checkpoint (0 = yes)",
                                float(not (resumed and 0 < int(resumed.group(1)) < iters)), 0.0))
            out += more
        checks.append(check(f"{amp}: exit code", float(code), 0.0))
        metrics = _last_metrics(work) if os.path.exists(os.path.join(work, "metrics.jsonl")) else {"rows": [],
                                                                                                     "last": {}}
        last = metrics["last"]
        loss = last.get("loss", float("nan"))
        checks.append(check(f"{amp}: final training loss is finite (0 = yes)", float(not loss == loss), 0.0))
        checks.append(check(f"{amp}: model_final.pth written (0 = yes)",
                            float(not os.path.exists(os.path.join(work, "model_final.pth"))), 0.0))
        img_s = [r.get("img_s") for r in metrics["rows"][1:]]
        rows.append([amp, last.get("iter"), loss,
                     statistics.median([v for v in img_s if v]) if any(img_s) else None, wall])
        if code != 0:
            print(out[-3000:], file=sys.stderr)
    table = (f"tools/train.py under torchrun --nproc_per_node 1, {config}, crop {sizes['train_crop']}, batch "
             f"{sizes['train_batch']}, {iters} iterations on generated {h}x{w} data (fp16 includes the kill and "
             "the resumed run)", ["amp", "last iteration", "last loss", "img/s (median of log windows after the "
                                  "first)", "wall s"], rows)
    return {"checks": checks, "tables": [table]}


def section_train_speed(device, sizes) -> dict:
    rows, results = [], {}
    info = DistInfo(0, 1, 0, device)
    specs = [(enc, cfg, sizes["train_crop"], sizes["train_batch"], cl) for enc, cfg in sizes["speed_encoders"].items()
             for cl in sizes["channels_last"]]
    if sizes["paper_crop"]:  # what one GPU consumes at the paper's crop, to size the data loader
        first_enc, first_cfg = next(iter(sizes["speed_encoders"].items()))
        specs.append((first_enc, first_cfg, *sizes["paper_crop"], False))
    torch.backends.cudnn.benchmark = True
    for encoder, config, crop, batch, channels_last in specs:
        cfg = load_config(os.path.join(ROOT, config), ["model.pretrained=null", f"train.amp={sizes['speed_amp']}",
                                                       f"train.device={device.type}"])
        runners = {p: train_speed.Runner(cfg, p, info, batch, crop, channels_last) for p in ("zeros", "partial")}
        for runner in runners.values():
            runner.step(2 if device.type == "cuda" else 1)
        times = {p: [] for p in runners}
        for _ in range(sizes["speed_rounds"]):
            for p, runner in runners.items():
                times[p].append(runner.step(sizes["speed_iters"]) / sizes["speed_iters"])
        zeros, partial = (statistics.median(times[p]) for p in ("zeros", "partial"))
        key = f"{encoder}/crop{crop}/b{batch}/{'channels_last' if channels_last else 'contiguous'}"
        results[key] = {"zeros_img_s": batch / zeros, "partial_img_s": batch / partial, "ratio": partial / zeros}
        rows.append([encoder, crop, batch, "yes" if channels_last else "no", batch / zeros, batch / partial,
                     partial / zeros, "yes" if partial / zeros <= GOALS["train"] else "no"])
        del runners
        if device.type == "cuda":
            torch.cuda.empty_cache()
    table = (f"DeepLabV3+ training speed, amp {sizes['speed_amp']}, one fixed batch (no data loading), "
             "cuDNN autotuning on; "
             f"median of {sizes['speed_rounds']} interleaved rounds x {sizes['speed_iters']} steps",
             ["encoder", "crop", "batch", "channels_last", "zeros img/s", "partial img/s", "time partial/zeros",
              "within 3%"], rows)
    return {"results": results, "tables": [table]}


def _bench_subprocess(script: str, args: list[str], tmp: str, timeout: float) -> tuple[dict, str]:
    json_path = os.path.join(tmp, f"{script}.json")
    proc = subprocess.run([sys.executable, os.path.join(BENCH, script), *args, "--json", json_path], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{script} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    with open(json_path) as f:
        return json.load(f), proc.stdout


def section_eval_speed(device, sizes, tmp: str) -> dict:
    data, stdout = _bench_subprocess("eval_speed.py", sizes["eval_args"] + ["--no-official", "--device",
                                                                            device.type], tmp, 300)
    rows = [[mode, r["tiles"], r["area_ratio"], r["seconds"], 1 / r["seconds"], r["ratio_to_ideal"]]
            for mode, r in data["modes"].items()]
    passes = [[mode, data[f"eval_{mode}"]["total_s"], data[f"eval_{mode}"]["network_s"],
               100 * data[f"eval_{mode}"]["outside_share"]] for mode in ("regular", "overlap")
              if f"eval_{mode}" in data]
    s = data["settings"]
    return {"results": data, "tables": [
        (f"{s['encoder']} DeepLabV3+ OS{s['output_stride']}, {s['height']}x{s['width']}, tile {s['tile_size']}, "
         "fp32: one image per call, median of repeats", ["mode", "tiles", "area / image", "s per image", "images/s",
                                                         "ratio to ideal"], rows),
        (f"Full evaluation pass on {s['images']} generated images (6 leave-out proportions, 5 distance bands)",
         ["mode", "total s", "network s", "% outside the network"], passes)], "note": stdout.strip()[-600:]}


def section_data(device, sizes, tmp: str, gpu_img_s: float | None) -> dict:
    args = sizes["data_args"] + (["--gpu-img-s", f"{gpu_img_s:.2f}"] if gpu_img_s else [])
    data, stdout = _bench_subprocess("data_speed.py", args, tmp, 300)
    rows = [[r["workers"], r["samples_per_s"], r["samples_per_s"] / gpu_img_s if gpu_img_s else None]
            for r in data["loader"]]
    return {"results": data, "tables": [(
        f"Training samples/s (uint8 crops) by DataLoader workers on this machine's {os.cpu_count()} CPU cores; one "
        f"GPU trains at {_fmt(gpu_img_s)} img/s (ResNet-50 DeepLabV3+, paper crop, bf16)",
        ["workers", "samples/s", "share of one GPU's need"], rows)]}


# ----------------------------------------------------------------------------------------- driver
def run_section(report: Report, name: str, fn, deadline: float, dry_run: bool) -> dict | None:
    left = deadline - time.monotonic()
    if not dry_run and left < ESTIMATE_S[name]:
        report.add(name, "skipped", 0.0, note=f"skipped: {left:.0f} s of the budget left, about "
                                              f"{ESTIMATE_S[name]} s needed")
        print(f"[gpu_check] {name}: skipped (budget)", flush=True)
        return None
    print(f"[gpu_check] {name} ...", flush=True)
    t0 = time.perf_counter()
    try:
        out = fn()
    except Exception as e:  # one broken section must not cost the measurements of the others
        traceback.print_exc()
        report.add(name, "error", time.perf_counter() - t0, note=f"error: {type(e).__name__}: {e}"[:2000])
        return None
    status = "failed" if any(not c["ok"] for c in out.get("checks", [])) else "ok"
    report.add(name, status, time.perf_counter() - t0, out.get("results"), out.get("checks", []),
               out.get("tables", []), out.get("note", ""))
    print(f"[gpu_check] {name}: {status} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="work_dirs/gpu_check", help="folder for gpu_check.json / gpu_check.md")
    p.add_argument("--dry-run", action="store_true", help="run every section on the CPU at tiny sizes")
    p.add_argument("--budget-s", type=float, default=450.0, help="sections that would not fit are skipped")
    p.add_argument("--sections", nargs="+", default=list(ESTIMATE_S), choices=list(ESTIMATE_S))
    args = p.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        p.error("no CUDA device: run on a GPU machine, or use --dry-run for the CPU self-test")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.monotonic()
    deadline = start + args.budget_s
    device = torch.device("cpu" if args.dry_run else "cuda")
    sizes = SIZES["dry" if args.dry_run else "gpu"]
    report = Report(args.out, environment(device, args.dry_run))
    speed = {}
    with tempfile.TemporaryDirectory() as tmp:
        sections = {
            "correctness": lambda: section_correctness(device, sizes),
            "layer_sweep": lambda: section_layer_sweep(device, sizes),
            "table1": lambda: section_table1(device, sizes),
            "train_cli": lambda: section_train_cli(device, sizes, tmp),
            "train_speed": lambda: speed.setdefault("out", section_train_speed(device, sizes)),
            "eval_speed": lambda: section_eval_speed(device, sizes, tmp),
            "data": lambda: section_data(device, sizes, tmp, _paper_crop_img_s(speed, sizes)),
            "compile": lambda: section_compile(device, sizes, deadline),
        }
        for name in ESTIMATE_S:
            if name == "compile" and args.dry_run:
                report.add(name, "skipped", 0.0, note="skipped: compiling on a 2-core CPU takes minutes (dry run)")
            elif name in args.sections:
                run_section(report, name, sections[name], deadline, args.dry_run)
            report.env["elapsed_s"] = time.monotonic() - start
    report.write()
    print(f"[gpu_check] wrote {os.path.join(args.out, 'gpu_check.md')} and gpu_check.json "
          f"({report.env['elapsed_s']:.0f} s)")
    if report.failed:
        print("[gpu_check] FAILED: " + "; ".join(report.failed), file=sys.stderr)
        return 1
    return 0


def _paper_crop_img_s(speed: dict, sizes: dict) -> float | None:
    """Zero-padding img/s of the first encoder at the paper's crop, from the train_speed section."""
    if not sizes["paper_crop"]:
        return None
    crop, batch = sizes["paper_crop"]
    for key, r in speed.get("out", {}).get("results", {}).items():
        if f"/crop{crop}/b{batch}/" in key:
            return r["zeros_img_s"]
    return None


if __name__ == "__main__":
    sys.exit(main())
