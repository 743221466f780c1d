"""The border-only kernel and the sync-free geometry of PartialConv2d.

The Triton kernels run on CPU tensors only under Triton's interpreter, which must be switched on before the
kernels are defined: tests/border_kernel_checks.py runs them in one subprocess (float64 outputs and gradients
against seg.nn.reference, NCHW and channels_last; bf16 / fp16 within 1 ulp; the caller's gradient unchanged;
no host sync). Another subprocess compiles them for an sm_90 GPU (no GPU needed). The rest runs here on the CPU's
own path.
"""
import json
import os
import subprocess
import sys

import pytest
import torch
from border_kernel_checks import SyncRecorder, small_model, sync_ops_of_steps
from test_partial_conv import build

import seg.nn.partial_conv as pc
from seg.nn import PaddingError, border_kernel, set_reweight_strategy
from seg.nn.ratio import axis_bands, axis_ratio, output_size

TESTS = os.path.dirname(os.path.abspath(__file__))


def run_interpreted_checks(*args: str) -> dict:
    env = {**os.environ, "TRITON_INTERPRET": "1", "SEG_BORDER_KERNEL_ON_CPU": "1"}
    proc = subprocess.run([sys.executable, os.path.join(TESTS, "border_kernel_checks.py"), *args],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def assert_clean(report: dict, counts: dict) -> None:
    assert report["failures"] == []
    assert report["counts"] == counts  # every check ran on as many cases as asked
    # the first step builds the plans, the second is steady state: neither waits for the host
    assert report["sync_ops"] == [[], []]


def test_border_kernel_under_interpreter_quick():
    report = run_interpreted_checks("--grid", "8", "--special", "3", "--half", "4", "--autocast", "2")
    assert_clean(report, {"float64 grid": 16, "special gradients": 3, "empty batch": 2, "half kernels": 16,
                          "autocast layer": 4})


@pytest.mark.slow
def test_border_kernel_under_interpreter_full_grid():
    report = run_interpreted_checks("--alternate")  # the whole 160-case grid of test_partial_conv
    assert report["counts"]["float64 grid"] == 160 and report["counts"]["half kernels"] >= 60
    assert_clean(report, report["counts"])


# Defines the kernels as a CUDA machine would (the interpreter would not compile them) and compiles every dtype for
# an H100/H200 (sm_90) down to a cubin with the ptxas bundled in triton: no GPU is touched.
COMPILE_FOR_SM90 = r"""
import torch
torch.cuda.is_available = lambda: True
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from seg.nn import border_kernel as bk
assert bk.HAVE_TRITON and not bk.ON_CPU
kernels = ((bk._reweight_kernel, ["y", "rh", "rw", "vh", "vw", "bias"], "HAS_BIAS"),
           (bk._scale_kernel, ["g", "saved", "delta", "rh", "rw", "vh", "vw"], "WITH_DELTA"),
           (bk._restore_kernel, ["g", "saved"], None))
done = 0
for index, dtype in enumerate(["fp32", "bf16", "fp16", "fp64"]):
    table = "fp64" if dtype == "fp64" else "fp32"
    for fn, pointers, flag in kernels:
        consts = {"CHANNELS_INNER": index % 2 == 1, "BLOCK": bk.BLOCK, **({flag: index < 2} if flag else {})}
        signature = {p: "*" + (dtype if p in ("y", "g", "saved") else "fp32" if p == "bias" else table)
                     for p in pointers}
        signature |= {n: "i64" if index == 3 else "i32" for n in bk._SHAPE_ARGS} | dict.fromkeys(consts, "constexpr")
        compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=consts),
                                  target=GPUTarget("cuda", 90, 32))
        done += len(compiled.asm["cubin"]) > 0
print(done)
"""


def test_kernels_compile_for_sm90(tmp_path):
    env = {**os.environ, "TRITON_CACHE_DIR": str(tmp_path)}  # compile for real, not from a cache
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run([sys.executable, "-c", COMPILE_FOR_SM90], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["12"]  # 3 kernels x 4 dtypes, each down to a cubin


def counted_taps(pos, size_in, kernel, stride, pad_lo, dilation):
    return sum(0 <= pos * stride - pad_lo + t * dilation < size_in for t in range(kernel))


@pytest.mark.parametrize("size_in", [1, 2, 5, 9, 16])
def test_axis_ratio_counts_on_device_like_the_host_formula(size_in):
    for kernel, stride, dilation, pad_lo, pad_hi in [(3, 1, 1, 1, 1), (7, 2, 1, 3, 3), (5, 3, 2, 6, 1),
                                                      (4, 1, 1, 1, 2), (2, 2, 4, 0, 5), (1, 1, 1, 0, 0),
                                                      (3, 1, 4, 9, 9)]:
        n_out = output_size(size_in, kernel, stride, pad_lo, pad_hi, dilation)
        if n_out <= 0:
            continue
        counts = [counted_taps(i, size_in, kernel, stride, pad_lo, dilation) for i in range(n_out)]
        exact = [kernel / c if c else 0.0 for c in counts]  # Python's correctly rounded float64 quotient
        for dtype in (torch.float64, torch.float32):
            ratio, valid = axis_ratio(size_in, kernel, stride, pad_lo, dilation, n_out, torch.device("cpu"), dtype)
            assert ratio.dtype == valid.dtype == dtype
            assert torch.equal(ratio, torch.tensor(exact, dtype=dtype))  # float32: float32(K / S), bit for bit
            assert torch.equal(valid, torch.tensor([float(c > 0) for c in counts], dtype=dtype))
        bands = axis_bands(size_in, kernel, stride, pad_lo, pad_hi, dilation)
        interior = exact[bands.lead:n_out - bands.trail]
        assert all(r == 1 for r in interior) and all(r != 1 for r in exact[:bands.lead])


def test_layer_and_model_make_no_host_sync_from_the_first_call():
    pc.clear_plan_cache()
    conv = build((3, 3), (2, 1), (1, 2), (2, 1), (2, 3, 1), True)
    x = torch.randn(2, 2, 9, 8, dtype=torch.float64, requires_grad=True)
    for step, found in enumerate(sync_ops_of_steps(conv, x)):
        assert found == [], f"step {step}: {found}"
    pc.clear_plan_cache()
    for step, found in enumerate(sync_ops_of_steps(small_model(), torch.randn(2, 3, 13, 11, requires_grad=True))):
        assert found == [], f"model step {step}: {found}"


def test_sync_recorder_sees_host_data_and_reads():
    # the recorder itself must catch what it is there to catch
    with SyncRecorder() as recorder:
        torch.tensor([1.0, 2.0])
        torch.ones(3).sum().item()
        torch.ones(3).nonzero()
    assert [op.split(" ")[0] for op in recorder.found] == ["aten.lift_fresh.default",
                                                           "aten._local_scalar_dense.default",
                                                           "aten.nonzero.default"]


def test_border_strategy_refuses_a_tensor_it_cannot_run_on():
    conv = build((3, 3), (1, 1), (1, 1), 1, (2, 2, 1), True)
    old = set_reweight_strategy("border")
    try:
        with pytest.raises(PaddingError, match="'border' needs a CUDA GPU .* got a cpu tensor and no Triton"):
            conv(torch.randn(1, 2, 5, 5, dtype=torch.float64))
    finally:
        set_reweight_strategy(old)


def test_kernels_run_only_on_gpus_triton_supports(monkeypatch):
    capabilities = {0: (9, 0), 1: (6, 1)}  # an H200 and a Pascal card
    monkeypatch.setattr(border_kernel, "HAVE_TRITON", True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: capabilities[index])
    border_kernel._triton_supports.cache_clear()
    try:
        assert border_kernel.runs_on(torch.device("cuda", 0))
        assert not border_kernel.runs_on(torch.device("cuda", 1))
        assert not border_kernel.runs_on(torch.device("cpu"))  # the interpreter switch is off here
    finally:
        border_kernel._triton_supports.cache_clear()
