"""bench/gpu_check.py on the CPU: its dry run (the same sections at tiny sizes), its sections' checks failing
when the layer is wrong, the warm evaluation split, its report and its process handling."""
import json
import os
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import eval_speed  # noqa: E402
import gpu_check  # noqa: E402
import padding_overhead  # noqa: E402
from gpu_sections import correctness, training  # noqa: E402
from gpu_sections.report import Report, Run, SectionResult, Table, environment, holds, within  # noqa: E402

from seg.evaluation import InferenceSettings  # noqa: E402
from seg.nn import PartialConv2d, reweight_strategies  # noqa: E402

DEFAULT = ["correctness", "table1", "train_speed", "compile", "eval_split"]


def run_dry(out, *sections):
    cmd = [sys.executable, os.path.join(ROOT, "bench", "gpu_check.py"), "--dry-run", "--out", str(out)]
    return subprocess.run(cmd + (["--sections", *sections] if sections else []), cwd=ROOT, capture_output=True,
                          text=True, timeout=900)


def read_report(out):
    with open(out / "gpu_check.json") as f:
        doc = json.load(f)
    with open(out / "gpu_check.md") as f:
        return doc, f.read()


@pytest.mark.slow  # every default section at tiny sizes: about a minute of CPU
def test_dry_run_runs_the_default_sections_in_priority_order_and_checks_real_things(tmp_path):
    proc = run_dry(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc, md = read_report(tmp_path)
    assert doc["environment"]["dry_run"] and doc["failed"] == []
    assert list(doc["sections"]) == DEFAULT
    for name, section in doc["sections"].items():
        assert section["status"] == "ok", (name, section["note"])
        assert f"#### {name}: ok" in md
    # every strategy, dtype and layout against the float64 reference, within the stated tolerance
    layer = doc["sections"]["correctness"]["results"]
    dtypes = {"float32": correctness.TOLERANCE[torch.float32], "bfloat16": correctness.TOLERANCE[torch.bfloat16]}
    assert set(layer) == {f"{d} {s} {layout}" for d in dtypes for s in reweight_strategies(torch.device("cpu"))
                          for layout in ("NCHW", "channels_last")}
    for name, errors in layer.items():
        limit = dtypes[name.split()[0]]
        assert 0 < errors["forward_err"] <= limit and 0 < errors["gradient_err"] <= correctness.GRAD_FACTOR * limit
    table1 = doc["sections"]["table1"]["results"]
    assert set(table1) == {"resnet18/NCHW", "resnet18/channels_last"}
    for scenarios in table1.values():
        assert set(scenarios) == {"forward", "forward_backward", "first_call"}
        assert all(set(s) == set(padding_overhead.variants(torch.device("cpu"))) for s in scenarios.values())
    counts = doc["sections"]["compile"]["results"]["counts"]
    assert set(counts) == {"zeros", "partial/plain", "partial/custom_op"}  # both compile paths, side by side
    for path in ("plain", "custom_op"):
        partial = counts[f"partial/{path}"]
        assert partial["graph_breaks"] == 0 and 1 <= partial["graphs"] <= counts["zeros"]["graphs"]
    assert set(doc["sections"]["compile"]["results"]["resnet18"]) == {"zeros", "partial/plain", "partial/custom_op"}
    split = doc["sections"]["eval_split"]["results"]
    assert list(split["stage_s"]) == list(eval_speed.STAGES) and split["images"] == 4
    assert split["total_s"] == pytest.approx(sum(split["stage_s"].values()))
    assert set(doc["sections"]["train_speed"]["results"]) == {"resnet18/crop64/b2/NCHW",
                                                             "resnet18/crop64/b2/channels_last"}


def test_correctness_section_fails_a_layer_that_is_off_by_one_percent(monkeypatch):
    run = Run(torch.device("cpu"), "", time.monotonic() + 60, True)  # the unpatched layer passes: the dry run
    forward = PartialConv2d.forward
    monkeypatch.setattr(PartialConv2d, "forward",
                        lambda self, x, mask=None: forward(self, x) * 1.01 if mask is None else forward(self, x, mask))
    checks, _, results = correctness.layer_checks(run, {"grid": 2, "mask_grid": 1})
    # 1% is beyond fp32's limit (1e-4), within bf16's (3e-2): every fp32 forward check fails, no bf16 one
    failed = {c.name for c in checks if not c.ok}
    assert {n for n in failed if "forward" in n} == {f"PartialConv2d {n} forward" for n in results
                                                     if n.startswith("float32")}


class SleepyLoader:
    """Two (image, target) samples per epoch, each after ``wait`` seconds."""

    def __init__(self, wait):
        self.wait = wait

    def __iter__(self):
        for _ in range(2):
            time.sleep(self.wait)
            yield torch.zeros(3, 8, 16), torch.zeros(8, 16, dtype=torch.long)


class SleepyNet(nn.Module):
    def __init__(self, wait):
        super().__init__()
        self.wait = wait

    def forward(self, x):
        time.sleep(self.wait)
        return torch.zeros(x.shape[0], 19, *x.shape[2:])


def test_warm_split_puts_loader_and_network_time_in_their_own_stages():
    split = eval_speed.warm_split(SleepyNet(0.15), SleepyLoader(0.03), torch.device("cpu"), 19, InferenceSettings(),
                                  images=5, warmup=1, analysis={"leave_out": [0.5], "distance_bands": [0, 2]})
    stage = split["stage_s"]
    assert split["images"] == 5 and list(stage) == list(eval_speed.STAGES)
    # the sleeps are lower bounds whatever the load; swapped stages would give the loader 5 x 0.15 s
    assert stage["data_wait"] >= 5 * 0.03 and stage["network"] >= 5 * 0.15 > stage["data_wait"]
    assert split["outside_network_share"] == pytest.approx(1 - stage["network"] / split["total_s"])


@pytest.mark.slow  # trains or runs a tool end to end: left out of make test-fast
def test_dry_run_training_path_kills_and_resumes(tmp_path):
    proc = run_dry(tmp_path, "train_cli")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc, _ = read_report(tmp_path)
    names = {c["name"]: c["ok"] for c in doc["sections"]["train_cli"]["checks"]}
    assert names["fp16: killed after its first checkpoint"]
    assert names["fp16: --resume auto continued from the killed run's checkpoint"]
    assert all(names.values())


def test_report_lists_failed_checks_and_errors(tmp_path):
    report = Report(str(tmp_path), environment(torch.device("cpu"), True))
    report.add(SectionResult("a", checks=[within("small", 1e-6, 1e-4), holds("yes", True)]))
    assert report.failed == []
    report.add(SectionResult("b", "failed", checks=[within("too big", 0.5, 1e-4), holds("no", False)],
                             tables=[Table("t", ["x", "y"], [[1, 2.5]])]))
    report.add(SectionResult("c", "error", note="error: RuntimeError: boom"))
    doc, md = read_report(tmp_path)
    assert doc["failed"] == ["b: too big", "b: no", "c: error: RuntimeError: boom"]
    assert "| too big | 0.500 | 0.0001 | NO |" in md and "| no | | | NO |" in md and "| 1 | 2.500 |" in md
    assert within("nan", float("nan"), 1.0).ok is False


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_without_cuda_asks_for_dry_run(capsys):
    with pytest.raises(SystemExit) as e:
        gpu_check.parse_args([])
    assert e.value.code == 2 and "--dry-run" in capsys.readouterr().err


def test_kill_tree_reaches_a_grandchild_in_its_own_session(tmp_path):
    # torchrun starts its worker with start_new_session=True: killing the launcher's group would miss it
    pid_file = tmp_path / "grandchild.pid"
    script = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; "
              f"time.sleep(60)'], start_new_session=True); open({str(pid_file)!r}, 'w').write(str(p.pid)); "
              "time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", script])
    for _ in range(200):
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    training.kill_tree(proc)
    assert proc.returncode == -9
    try:
        with open(f"/proc/{grandchild}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        state = "gone"
    assert state in ("gone", "Z")
