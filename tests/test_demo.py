"""The demo pipeline end to end (shortened), and the reproduction script's plan and tables."""
import json
import os
import re
import sys

import pytest

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
    work = tmp_path / "paper"
    for padding, miou in (("zeros", 70.0), ("partial", 71.5)):
        folder = work / "cityscapes" / f"resnet50_{padding}"
        folder.mkdir(parents=True)
        json.dump({"mIoU": miou}, open(folder / "eval_regular.json", "w"))
    reproduce.main(["--tables", "5", "--work-dir", str(work)])
    out = capsys.readouterr().out
    assert re.search(r"\[table 5\] \[to run\] .*tools/train.py", out)  # no model_final.pth yet
    assert re.search(r"\[table 5\] \[done\] .*tools/eval.py .*resnet50_zeros", out)
    assert re.search(r"\| resnet50 \| 70\.00 \| 71\.50 \| 78\.08 \| 78\.20 \|", out)
    assert "| wrn38 | not run | not run |" in out
