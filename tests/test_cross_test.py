"""seg.evaluation.cross_test: arms over seeds, paired intervals against scipy, tables, heatmap, and which errors
count as "padding cannot run"."""
import csv
import json

import numpy as np
import pytest
import torch
from scipy import stats as sps

from seg.evaluation import cross_test

PADDINGS = ["zeros", "partial", "reflect"]


def rows():
    """Three seeds per trained padding; zeros-trained weights evaluated with reflect could not run for seed 2."""
    rng = np.random.default_rng(0)
    out = []
    for trained, base in (("zeros", 60.0), ("partial", 62.0)):
        for seed in range(3):
            miou = {p: float(base + rng.normal(0, 1) - (0 if p == trained else 3 + rng.normal(0, 0.5)))
                    for p in PADDINGS}
            row = {"run": f"{trained}_s{seed}", "label": f"{trained}_s{seed} (resnet18, {trained})",
                   "encoder": "resnet18", "trained_padding": trained, "train_seed": seed, "mIoU": miou, "not_run": {}}
            if trained == "zeros" and seed == 2:
                row["mIoU"]["reflect"], row["not_run"]["reflect"] = None, "reflect padding is wider than a feature map"
            out.append(row)
    return out


def test_cells_over_seeds_match_numpy_and_a_paired_scipy_interval():
    data = rows()
    summary = cross_test.summarize(data, PADDINGS, "regular")
    assert list(summary["arms"]) == ["resnet18 zeros", "resnet18 partial"]
    for label, trained in (("resnet18 zeros", "zeros"), ("resnet18 partial", "partial")):
        runs = [r for r in data if r["trained_padding"] == trained]
        for p in PADDINGS:
            cell = summary["arms"][label]["cells"][p]
            both = [r for r in runs if r["mIoU"][p] is not None]
            values = np.array([r["mIoU"][p] for r in both])
            assert cell["mean_std"] == pytest.approx((values.mean(), values.std(ddof=1), len(both)))
            if p == trained:
                assert cell["change"] is None
                continue
            own = np.array([r["mIoU"][trained] for r in both])
            ref = sps.ttest_rel(values, own).confidence_interval(0.95)
            assert (cell["change"]["low"], cell["change"]["high"]) == pytest.approx((ref.low, ref.high), abs=1e-9)
            assert cell["change"]["mean_std"][0] == pytest.approx((values - own).mean())
            assert cell["change"]["method"].startswith(f"paired t over {len(both)} seeds")


def test_written_tables_heatmap_and_json(tmp_path):
    summary = cross_test.summarize(rows(), PADDINGS, "regular")
    text = cross_test.write(summary, str(tmp_path))
    for name in ("cross_test_mean", "cross_test_change", "cross_test_runs"):
        assert (tmp_path / "tables" / f"{name}.csv").exists() and "\\toprule" in (
            tmp_path / "tables" / f"{name}.tex").read_text()
    mean_rows = list(csv.reader(open(tmp_path / "tables" / "cross_test_mean.csv")))
    zeros = [r["mIoU"]["zeros"] for r in rows() if r["trained_padding"] == "zeros"]
    assert mean_rows[1][:2] == ["resnet18 zeros", f"{np.mean(zeros):.2f} ± {np.std(zeros, ddof=1):.2f} (3)"]
    assert f"**{np.mean(zeros):.2f} ± {np.std(zeros, ddof=1):.2f} (3)**" in text  # as trained: bold
    assert "zeros_s2 (resnet18, zeros) with reflect: not run (reflect padding is wider" in text
    assert (tmp_path / "cross_test_heatmap.png").stat().st_size > 0 and "](cross_test_heatmap.png)" in text
    assert json.loads((tmp_path / "cross_test.json").read_text())["arms"]["resnet18 zeros"]["seeds"] == [0, 1, 2]
    matrix, labels, cols = cross_test.heatmap(summary)
    assert matrix[0][0] == pytest.approx(np.mean(zeros)) and labels[1] == "resnet18 partial" and cols == PADDINGS


def test_only_a_padding_that_cannot_run_is_reported_as_not_run():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 5, padding=2))
    tiny = torch.zeros(1, 1, 1, 1)  # reflect padding of 2 on a 1x1 map cannot run

    def run():
        return {"mIoU": float(model(tiny).detach().sum())}
    result, why = cross_test.evaluate_with_padding(model, "reflect", run)
    assert result is None and "wider than a feature map" in why
    result, why = cross_test.evaluate_with_padding(model, "zeros", run)
    assert why is None and result["mIoU"] == pytest.approx(model[0].bias.item())

    def mismatch():
        raise ValueError("the checkpoint has 19 classes, the label space 3")
    with pytest.raises(ValueError, match="19 classes"):  # a label-space mismatch is an error, not "not run"
        cross_test.evaluate_with_padding(model, "zeros", mismatch)
    with pytest.raises(RuntimeError, match="channels"):  # so is a channel mismatch
        cross_test.evaluate_with_padding(model, "zeros", lambda: model(torch.zeros(1, 3, 8, 8)))
