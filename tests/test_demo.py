"""The demo pipeline end to end (shortened), and the reproduction script's plan and tables."""
import json
import os
import re
import sys

import numpy as np
import pytest
from scipy import stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import demo  # noqa: E402
import reproduce  # noqa: E402


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    report = demo.main(["--work-dir", str(work / "run"), "--data", str(work / "data"), "--iterations", "2",
                        "--crop", "64", "--tile", "64", "--train-images", "8", "--val-images", "2",
                        "--height", "64", "--width", "128"])
    return work / "run", report


def test_demo_writes_report_with_measured_numbers(demo_report):
    run, report = demo_report
    text = open(report).read()
    for mode in demo.MODES:
        for padding in demo.PADDINGS:
            miou = json.load(open(run / padding / f"eval_{mode}.json"))["mIoU"]
            line = next(l for l in text.splitlines() if l.startswith(mode))
            assert f"{padding} {miou:6.2f}" in line  # the summary quotes the eval JSON, not a made-up value
    assert "Cross-testing" in text and "Centre leave-out" in text
    plots = re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", text)
    assert plots and all(os.path.getsize(run / p) > 0 for p in plots)  # every linked plot exists
    assert "78.08" in text  # the paper's table sits beside the measured one


def test_demo_reuses_finished_steps(demo_report):
    run, _ = demo_report
    stamp = os.path.getmtime(run / "zeros" / "model_final.pth")
    demo.main(["--work-dir", str(run), "--data", str(run.parent / "data"), "--iterations", "2", "--crop", "64",
               "--tile", "64"])
    assert os.path.getmtime(run / "zeros" / "model_final.pth") == stamp


def test_reproduce_plan_and_tables(tmp_path, capsys):
    """Three seeds per cell; best-on-val and final checkpoints each as mean ± std with a paired interval."""
    work = tmp_path / "paper"
    values = {("zeros", "best"): [70.0, 71.0, 69.5], ("partial", "best"): [71.5, 71.2, 70.9],
              ("zeros", "final"): [69.0, 70.5, 69.1], ("partial", "final"): [70.0, 70.1, 70.6]}
    for (padding, kind), mious in values.items():
        for seed, miou in enumerate(mious):
            folder = work / "cityscapes" / f"resnet50_{padding}_s{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            json.dump({"mIoU": miou}, open(folder / f"eval_{kind}_regular.json", "w"))
    reproduce.main(["--tables", "5", "--work-dir", str(work)])
    out = capsys.readouterr().out
    for seed in (0, 1, 2):  # no model_final.pth yet: training to run, with the seed
        assert re.search(rf"\[table 5\] \[to run\] .*tools/train.py .*resnet50_zeros_s{seed} .*train.seed={seed}", out)
    assert re.search(r"\[table 5\] \[done\] .*tools/eval.py .*resnet50_zeros_s1/checkpoints/best.pth", out)
    cells = []
    for kind in ("best", "final"):
        z, p = np.array(values[("zeros", kind)]), np.array(values[("partial", kind)])
        ci = stats.ttest_rel(p, z).confidence_interval(0.95)
        cells += [f"{z.mean():.2f} ± {z.std(ddof=1):.2f} (3)", f"{p.mean():.2f} ± {p.std(ddof=1):.2f} (3)",
                  f"{p.mean() - z.mean():+.2f} [{ci.low:+.2f}, {ci.high:+.2f}]"]
    assert f"| resnet50 | {' | '.join(cells)} | 78.08 | 78.20 |" in out
    assert "| wrn38 | not run | not run | - | not run |" in out
