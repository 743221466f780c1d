"""bench/gpu_check.py on the CPU: its dry run (the same sections at tiny sizes), its report, its process handling.

The dry run's correctness section compares PartialConv2d with the float64 reference of test_partial_conv and
a DeepLabV3+ step on one device with the same step on another, so a broken layer fails it here too.
"""
import json
import os
import subprocess
import sys
import time

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import gpu_check  # noqa: E402

pytestmark = pytest.mark.slow  # trains or runs a tool end to end: left out of make test-fast


def run_dry(out, *sections):
    cmd = [sys.executable, os.path.join(ROOT, "bench", "gpu_check.py"), "--dry-run", "--out", str(out),
           "--sections", *sections]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)


def read_report(out):
    with open(out / "gpu_check.json") as f:
        doc = json.load(f)
    with open(out / "gpu_check.md") as f:
        return doc, f.read()


def test_dry_run_measures_every_section_and_writes_json_and_markdown(tmp_path):
    sections = ["correctness", "layer_sweep", "table1", "train_speed", "eval_speed", "data"]
    proc = run_dry(tmp_path, *sections)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc, md = read_report(tmp_path)
    assert doc["environment"]["dry_run"] and doc["failed"] == []
    for name in sections:
        assert doc["sections"][name]["status"] == "ok", (name, doc["sections"][name]["note"])
        assert f"#### {name}: ok" in md
    assert doc["sections"]["compile"]["status"] == "skipped"
    checks = doc["sections"]["correctness"]["checks"]
    assert len(checks) >= 10 and all(c["ok"] and c["value"] <= c["limit"] for c in checks)
    table1 = doc["sections"]["table1"]["results"]["resnet18"]
    for scenario in ("forward", "forward_backward", "first_call"):
        assert set(table1[scenario]) == {"zeros", "partial", "bands", "fullmap", "naive"}
        assert table1[scenario]["zeros"]["ratio"] == 1.0
    assert doc["sections"]["data"]["results"]["loader"][0]["samples_per_s"] > 0


def test_dry_run_training_path_kills_and_resumes(tmp_path):
    proc = run_dry(tmp_path, "train_cli")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc, _ = read_report(tmp_path)
    names = {c["name"]: c["ok"] for c in doc["sections"]["train_cli"]["checks"]}
    assert names["fp16: killed after its first checkpoint (0 = yes)"]
    assert names["fp16: --resume auto continued from the killed run's checkpoint (0 = yes)"]
    assert all(names.values())


def test_report_lists_failed_checks_and_errors(tmp_path):
    report = gpu_check.Report(str(tmp_path), gpu_check.environment(torch.device("cpu"), True))
    report.add("a", "ok", 1.0, checks=[gpu_check.check("small", 1e-6, 1e-4)])
    assert report.failed == []
    report.add("b", "failed", 1.0, checks=[gpu_check.check("too big", 0.5, 1e-4)],
               tables=[("t", ["x", "y"], [[1, 2.5]])])
    report.add("c", "error", 1.0, note="error: RuntimeError: boom")
    doc, md = read_report(tmp_path)
    assert doc["failed"] == ["b: too big", "c: error: RuntimeError: boom"]
    assert "| too big | 0.500 | 0.0001 | NO |" in md and "| 1 | 2.500 |" in md


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
    gpu_check._kill_tree(proc)
    assert proc.returncode == -9
    try:
        with open(f"/proc/{grandchild}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        state = "gone"
    assert state in ("gone", "Z")
