"""tools/compare.py on synthetic eval results: arms of several seeds, intervals against scipy, verdicts."""
import importlib.util
import json
import os

import numpy as np
import pytest
from scipy import stats as sps

from seg.cli import run_tool
from seg.evaluation.stats import save_image_stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K, NAMES = 3, ["road", "car", "sky"]
REGIONS = ["all", "leave_out 0", "leave_out 1/2", "band 0-2", "band 2+"]


def _tool():
    spec = importlib.util.spec_from_file_location("compare_tool", os.path.join(ROOT, "tools", "compare.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _iou(i, p, g):
    u = p + g - i
    return [100.0 * a / b if b > 0 else None for a, b in zip(i.tolist(), u.tolist())]


def _miou(ious):
    defined = [v for v in ious if v is not None]
    return sum(defined) / len(defined)


def write_run(folder, name, rng, noise, seed, padding, mode="regular", images=12):
    """An eval JSON + sidecar from random per-image counts; its numbers summed with plain float64 formulas."""
    counts = np.zeros((3, images, len(REGIONS), K), np.int64)
    for n in range(images):
        truth = rng.integers(0, K, (8, 8))
        guess = np.where(rng.random(truth.shape) < noise, rng.integers(0, K, truth.shape), truth)
        ring = np.zeros_like(truth, bool)
        ring[:2], ring[-2:], ring[:, :2], ring[:, -2:] = True, True, True, True
        centre = np.zeros_like(truth, bool)
        centre[2:6, 2:6] = True
        for r, mask in enumerate([np.ones_like(ring), np.ones_like(ring), ~centre, ring, ~ring]):
            for c in range(K):
                counts[:, n, r, c] = [((truth == c) & (guess == c) & mask).sum(), ((guess == c) & mask).sum(),
                                      ((truth == c) & mask).sum()]
    total = counts.sum(1)
    ious = [_iou(*total[:, r]) for r in range(len(REGIONS))]
    rows = lambda pick, key: [{key: lab.split(" ")[1], "label": lab.split(" ")[1], "mIoU": _miou(ious[r]),  # noqa
                               "IoU": ious[r]} for r, lab in enumerate(REGIONS) if lab.startswith(pick)]
    path = os.path.join(folder, f"{name}.json")
    save_image_stats({"intersection": counts[0], "prediction": counts[1], "ground_truth": counts[2],
                      "regions": REGIONS, "images": [f"im{n}" for n in range(images)], "class_names": NAMES},
                     path.replace(".json", ".images.npz"))
    result = {"mIoU": _miou(ious[0]), "IoU": ious[0], "class_names": NAMES, "settings": {"mode": mode},
              "leave_out": {"by": "side", "meaning": "m", "results": rows("leave_out", "proportion")},
              "distance_bands": {"meaning": "d", "results": rows("band", "band")}, "train_seed": seed,
              "encoder": "resnet18", "trained_padding": padding, "eval_padding": padding,
              "image_stats": f"{name}.images.npz"}
    with open(path, "w") as f:
        json.dump(result, f)
    return path, result


@pytest.mark.slow
def test_seed_intervals_match_scipy_paired_and_welch(tmp_path):
    rng = np.random.default_rng(0)
    zeros = [write_run(tmp_path, f"z{s}", rng, 0.5, s, "zeros") for s in range(3)]
    partial = [write_run(tmp_path, f"p{s}", rng, 0.45, s, "partial") for s in range(3)]
    other = [write_run(tmp_path, f"q{s}", rng, 0.45, 10 + s, "replicate") for s in range(4)]
    _tool().main([p for p, _ in zeros + partial + other] + ["--out-dir", str(tmp_path / "out"), "--resamples", "100"])
    out = json.loads((tmp_path / "out" / "compare.json").read_text())["comparisons"]["regular"]
    for key, pick in (("all", lambda r: r["mIoU"]), ("leave_out 1/2", lambda r: r["leave_out"]["results"][1]["mIoU"]),
                      ("class car", lambda r: r["IoU"][1])):
        a, b, c = ([pick(r) for _, r in arm] for arm in (zeros, partial, other))
        paired = sps.ttest_rel(b, a).confidence_interval(0.95)
        assert out["resnet18 partial − resnet18 zeros"]["rows"][key]["seeds"] == pytest.approx(
            [paired.low, paired.high], abs=1e-9)
        welch = sps.ttest_ind(c, a, equal_var=False).confidence_interval(0.95)
        assert out["resnet18 replicate − resnet18 zeros"]["rows"][key]["seeds"] == pytest.approx(
            [welch.low, welch.high], abs=1e-9)
    assert out["resnet18 partial − resnet18 zeros"]["seed_method"].startswith("paired t over 3 seeds")
    assert out["resnet18 replicate − resnet18 zeros"]["seed_method"].startswith("Welch")


def test_markdown_verdicts_and_plots(tmp_path):
    rng = np.random.default_rng(1)
    base = [write_run(tmp_path, f"z{s}", rng, 0.5, s, "zeros") for s in range(3)]
    copies = []
    for s, (path, _) in enumerate(base):  # the same predictions under another label: identical arms
        twin = tmp_path / f"twin{s}.json"
        twin.write_text(open(path).read())
        copies.append(str(twin))
    better = [write_run(tmp_path, f"b{s}", rng, 0.05, s, "partial") for s in range(3)]  # injected large gain
    files = [p for p, _ in base] + copies + [p for p, _ in better]
    labels = ["zeros"] * 3 + ["twin"] * 3 + ["partial"] * 3
    text = _tool().main(files + ["--labels", ",".join(labels), "--out-dir", str(tmp_path / "out"),
                                 "--resamples", "200"])
    out = json.loads((tmp_path / "out" / "compare.json").read_text())["comparisons"]["regular"]
    for key, row in out["twin − zeros"]["rows"].items():
        assert row["images"][0] <= 0 <= row["images"][1], key
    for key, row in out["partial − zeros"]["rows"].items():
        if not key.startswith("class"):
            assert row["images"][0] > 0 and row["seeds"][0] > 0, key
    sentences = [line for line in text.splitlines() if line.startswith("**")]
    assert len(sentences) == 2
    assert "includes 0" in sentences[0] and "excludes 0" in sentences[1]
    zeros_mean = np.mean([r["mIoU"] for _, r in base])
    zeros_std = np.std([r["mIoU"] for _, r in base], ddof=1)
    assert f"{zeros_mean:.2f} ± {zeros_std:.2f} (3)" in text
    for png in ("leave_out.png", "distance_profile.png"):
        assert os.path.getsize(tmp_path / "out" / png) > 0 and f"]({png})" in text


def test_one_run_per_arm_still_compares_over_images(tmp_path):
    rng = np.random.default_rng(2)
    files = [write_run(tmp_path, "z", rng, 0.5, 0, "zeros")[0], write_run(tmp_path, "p", rng, 0.05, 0, "partial")[0]]
    text = _tool().main(files + ["--out-dir", str(tmp_path / "out"), "--resamples", "100"])
    assert "no seed interval" in text and "over test images the interval" in text and "excludes 0" in text


def test_bad_file_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert run_tool(_tool().main, [str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(bad) in err and len(err.strip().splitlines()) == 1
