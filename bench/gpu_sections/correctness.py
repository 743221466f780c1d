"""Section "correctness": PartialConv2d on the device against the float64 CPU reference, every re-weighting
strategy, dtype and memory layout, with no host sync in a steady-state step; convert_padding on a torchvision
model; one DeepLabV3+ training step on the device against the same step on the CPU."""
from __future__ import annotations

import copy
import itertools

import padding_overhead
import torch

from seg.engine import train_step
from seg.models import DeepLabV3Plus
from seg.nn import PartialConv2d, convert_padding, reweight_strategies, set_reweight_strategy
from seg.nn.reference import grid_cases, naive_partial_conv
from seg.segmentation import build_criterion

from .report import Run, SectionResult, Table, holds, no_host_sync, tf32, within

#: Tolerances against the float64 reference, relative to the largest reference magnitude; gradients get 4x.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}
GRAD_FACTOR = 4

SIZES = {"gpu": dict(grid=64, mask_grid=8, step_size=(2, 3, 129, 161), step_encoder="resnet50",
                     convert_arch="resnet50"),
         "dry": dict(grid=6, mask_grid=2, step_size=(2, 3, 65, 81), step_encoder="resnet18", convert_arch="resnet18")}


def max_rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want| (``want`` float64 on the CPU)."""
    scale = want.abs().max().item() or 1.0
    return (got.detach().cpu().double() - want).abs().max().item() / scale


class Case:
    """One geometry of the reference grid: a float64 layer, input, output gradient and the reference output
    and gradients (optionally in mask mode), computed once and compared with every device variant."""

    def __init__(self, case, masked: bool = False):
        k, s, d, padding, size, (c_in, c_out, groups), bias = case
        torch.manual_seed(0)
        self.conv = PartialConv2d(c_in, c_out, k, stride=s, padding=padding, dilation=d, groups=groups,
                                  bias=bias).double()
        self.x = torch.randn(2, c_in, *size, dtype=torch.float64, requires_grad=True)
        self.mask = (torch.rand(1, 1, *size) > 0.3).double() if masked else None
        self.want = naive_partial_conv(self.x, self.conv.weight, self.conv.bias, s, padding, d, groups,
                                       mask=self.mask)[0]
        self.gy = torch.randn_like(self.want)
        self.want_grads = torch.autograd.grad(self.want, self.leaves(self.conv, self.x), self.gy)

    @staticmethod
    def leaves(conv, x) -> list[torch.Tensor]:
        return [x] + [p for p in (conv.weight, conv.bias) if p is not None]

    def errors(self, device, dtype, strategy: str, channels_last: bool) -> tuple[float, float, bool]:
        """(forward error, worst gradient error, whether the steady-state step made a host sync) on ``device``.

        fp32 runs the layer in fp32; bf16 / fp16 in fp32 under autocast, as training does. The step is run
        once first (the first call of a geometry may build its plan), then again under sync-debug mode."""
        layout = torch.channels_last if channels_last else torch.contiguous_format
        conv = copy.deepcopy(self.conv).float().to(device).to(memory_format=layout)
        x = self.x.detach().float().to(device).contiguous(memory_format=layout).requires_grad_()
        mask = None if self.mask is None else self.mask.float().to(device)
        gy = self.gy.float().to(device)

        def step():
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                y = conv(x) if mask is None else conv(x, mask)[0]
            return y, torch.autograd.grad(y.float(), self.leaves(conv, x), gy)

        old = set_reweight_strategy(strategy)
        try:
            step()
            try:
                with no_host_sync(device):
                    y, grads = step()
                synced = False
            except RuntimeError as e:
                if "synchroniz" not in str(e):
                    raise
                y, grads = step()
                synced = True
        finally:
            set_reweight_strategy(old)
        grad_err = max(max_rel_err(a, b) for a, b in zip(grads, self.want_grads))
        return max_rel_err(y, self.want), grad_err, synced


def layer_checks(run: Run, sizes: dict) -> tuple[list, Table, dict]:
    device = run.device
    dtypes = [torch.float32, torch.bfloat16] + ([torch.float16] if device.type == "cuda" else [])
    cases = [Case(c) for c in grid_cases(sizes["grid"], seed=7)]
    checks, rows, results = [], [], {}
    for dtype, strategy, channels_last in itertools.product(dtypes, reweight_strategies(device), (False, True)):
        errs = [case.errors(device, dtype, strategy, channels_last) for case in cases]
        fwd, grad = max(e[0] for e in errs), max(e[1] for e in errs)
        syncs = sum(e[2] for e in errs)
        name = f"{str(dtype).removeprefix('torch.')} {strategy} {'channels_last' if channels_last else 'NCHW'}"
        results[name] = {"forward_err": fwd, "gradient_err": grad, "cases_with_host_sync": syncs}
        rows.append([*name.split(), len(cases), fwd, grad, TOLERANCE[dtype], syncs if device.type == "cuda" else None])
        checks += [within(f"PartialConv2d {name} forward", fwd, TOLERANCE[dtype]),
                   within(f"PartialConv2d {name} gradients", grad, GRAD_FACTOR * TOLERANCE[dtype])]
        if device.type == "cuda":
            checks.append(holds(f"PartialConv2d {name}: steady-state forward+backward without host sync", not syncs))
    masked = [Case(c, masked=True).errors(device, torch.float32, "auto", False)
              for c in grid_cases(sizes["mask_grid"], seed=7)]
    checks.append(within("PartialConv2d fp32 mask mode, forward and gradients", max(max(e[:2]) for e in masked),
                         GRAD_FACTOR * TOLERANCE[torch.float32]))
    table = Table(f"Layer vs the float64 CPU reference (max error / max |reference|; gradient limit = {GRAD_FACTOR} x "
                  "forward limit; host syncs: cases whose steady-state step synced under "
                  "torch.cuda.set_sync_debug_mode('error'), CUDA only)",
                  ["dtype", "strategy", "layout", "cases", "forward err", "gradient err", "forward limit",
                   "host syncs"], rows)
    return checks, table, results


def conversion_checks(device, arch: str) -> list:
    """torchvision ``arch`` zeros -> partial -> zeros on the device: same parameter tensors, exact round trip,
    partial close to the naive full-map reference layer."""
    torch.manual_seed(0)
    model = padding_overhead.ARCHS[arch]().to(device).eval()
    naive = padding_overhead.naive_copy(copy.deepcopy(model))
    x = torch.randn(2, 3, 97, 131, device=device)
    ptrs = {k: v.data_ptr() for k, v in model.state_dict().items()}
    old, torch.backends.cudnn.deterministic = torch.backends.cudnn.deterministic, True
    try:
        with torch.no_grad():
            before = model(x)
            partial = convert_padding(model, "partial")(x)
            after = convert_padding(model, "zeros")(x)
            reference = naive(x)
    finally:
        torch.backends.cudnn.deterministic = old
    return [within("convert_padding round trip: max |zeros - zeros after partial|",
                   (after - before).abs().max().item(), 0.0),
            holds("convert_padding keeps every parameter tensor", ptrs == {k: v.data_ptr()
                                                                          for k, v in model.state_dict().items()}),
            within(f"{arch} partial vs naive reference layer (rel.)", max_rel_err(partial, reference.cpu().double()),
                   1e-3)]


def training_step_checks(device, sizes: dict) -> list:
    """One SGD step of DeepLabV3+ (partial padding) on ``device`` against the same step on the CPU, fp32."""
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
    return [within(f"DeepLabV3+ {sizes['step_encoder']} step: |loss device - loss CPU| / loss",
                   abs(dev_loss - cpu_loss) / abs(cpu_loss), 1e-4),
            within("DeepLabV3+ step: |update device - update CPU| / |update CPU|, all float tensors", update_err,
                   1e-3),
            within(f"DeepLabV3+ step: worst single tensor after the step, relative ({worst}; a zero-initialised "
                   "tensor whose one-step update is a heavily cancelling sum amplifies rounding)", rel(worst), 0.05)]


def correctness(run: Run) -> SectionResult:
    sizes = run.sizes(SIZES)
    with tf32(False):  # fp32 means fp32 here
        checks, table, results = layer_checks(run, sizes)
        checks += conversion_checks(run.device, sizes["convert_arch"])
        checks += training_step_checks(run.device, sizes)
    note = "" if run.device.type == "cuda" else "Host syncs are detected on CUDA only (sync-debug mode)."
    return SectionResult("correctness", results=results, checks=checks, tables=[table], note=note)
