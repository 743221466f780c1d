"""tools/compare.py on synthetic eval results: arms of several seeds, intervals against scipy, verdicts."""
import importlib.util
import json
import os
import shutil

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


def write_run(folder, name, rng, noise, seed, padding, mode="regular", images=12, names=None):
    """An eval JSON + sidecar from random per-image counts; its numbers summed with plain float64 formulas,
    its confusion matrix counted pixel by pixel. `names`: the image names (default im0, im1, ...)."""
    counts = np.zeros((3, images, len(REGIONS), K), np.int64)
    confusion = np.zeros((K, K), np.int64)
    for n in range(images):
        truth = rng.integers(0, K, (8, 8))
        guess = np.where(rng.random(truth.shape) < noise, rng.integers(0, K, truth.shape), truth)
        np.add.at(confusion, (truth, guess), 1)
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
                      "regions": REGIONS, "images": names or [f"im{n}" for n in range(images)], "class_names": NAMES},
                     path.replace(".json", ".images.npz"))
    result = {"mIoU": _miou(ious[0]), "IoU": ious[0], "class_names": NAMES, "settings": {"mode": mode},
              "leave_out": {"by": "side", "meaning": "m", "results": rows("leave_out", "proportion")},
              "distance_bands": {"meaning": "d", "results": rows("band", "band")}, "train_seed": seed,
              "encoder": "resnet18", "trained_padding": padding, "eval_padding": padding,
              "image_stats": f"{name}.images.npz", "confusion_matrix": confusion.tolist(), "num_images": images}
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
    (zeros, z), (partial, p) = write_run(tmp_path, "z", rng, 0.5, 0, "zeros"), write_run(tmp_path, "p", rng, 0.05, 0,
                                                                                           "partial")
    text = _tool().main([zeros, partial, "--out-dir", str(tmp_path / "out"), "--resamples", "100"])
    assert "no seed interval" in text and "over test images the interval" in text and "excludes 0" in text
    assert f"| all pixels | {z['mIoU']:.2f} (1) | {p['mIoU']:.2f} (1) | {p['mIoU'] - z['mIoU']:+.2f} | - | [" in text


def test_bad_file_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert run_tool(_tool().main, [str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(bad) in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- issue 25, case 7: one test set
def one_line_error(argv, capsys) -> str:
    assert run_tool(_tool().main, argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


def test_runs_scored_on_different_images_are_refused(tmp_path, capsys):
    rng = np.random.default_rng(3)
    base, _ = write_run(tmp_path, "z", rng, 0.5, 0, "zeros")
    out = ["--out-dir", str(tmp_path / "out"), "--resamples", "20"]
    shuffled, _ = write_run(tmp_path, "p", rng, 0.4, 0, "partial", names=[f"im{n}" for n in reversed(range(12))])
    err = one_line_error([base, shuffled] + out, capsys)
    assert (f"{base} and {shuffled} were scored on different images (image 1 is 'im0' in one, 'im11' in the "
            "other)") in err
    fewer, _ = write_run(tmp_path, "f", rng, 0.4, 0, "partial", images=10)
    err = one_line_error([base, fewer] + out, capsys)
    assert f"{base} and {fewer} were scored on different images (12 vs 10 images)" in err
    bare = tmp_path / "bare.json"  # no per-image statistics: the image set cannot be checked
    bare.write_text(json.dumps({k: v for k, v in json.loads(open(base).read()).items() if k != "image_stats"}))
    err = one_line_error([base, str(bare)] + out, capsys)
    assert f"{bare} has no per-image statistics" in err and "--allow-different-images" in err
    assert not (tmp_path / "out").exists()


def test_a_sidecar_of_another_run_is_refused(tmp_path, capsys):
    rng = np.random.default_rng(4)
    base, _ = write_run(tmp_path, "z", rng, 0.5, 0, "zeros")
    other, _ = write_run(tmp_path, "p", rng, 0.4, 0, "partial")
    sidecar = base.replace(".json", ".images.npz")
    shutil.copy(other.replace(".json", ".images.npz"), sidecar)  # same image names, another run's counts
    err = one_line_error([base, other, "--out-dir", str(tmp_path / "out")], capsys)
    assert err.startswith(f"error: {sidecar} does not belong to {base}: its 12 images' counts (3 classes) do not sum")
    four = {name: np.ones((12, len(REGIONS), 4), np.int64) for name in ("intersection", "prediction", "ground_truth")}
    save_image_stats(dict(four, regions=REGIONS, images=[f"im{n}" for n in range(12)],
                          class_names=NAMES + ["bus"]), sidecar)  # a 4-class run's sidecar
    err = one_line_error([base, other, "--out-dir", str(tmp_path / "out")], capsys)
    assert f"{sidecar} does not belong to {base}: its 12 images' counts (4 classes)" in err


def test_allow_different_images_reports_each_arms_own_numbers_only(tmp_path):
    rng = np.random.default_rng(5)
    zeros = [write_run(tmp_path, f"z{s}", rng, 0.5, s, "zeros") for s in range(2)]
    fewer = [write_run(tmp_path, f"f{s}", rng, 0.4, s, "partial", images=10) for s in range(2)]
    same = [write_run(tmp_path, f"r{s}", rng, 0.4, s, "replicate") for s in range(2)]
    files = [p for p, _ in zeros + fewer + same]
    text = _tool().main(files + ["--out-dir", str(tmp_path / "out"), "--resamples", "20", "--allow-different-images"])
    out = json.loads((tmp_path / "out" / "compare.json").read_text())
    for label, arm in (("resnet18 zeros", zeros), ("resnet18 partial", fewer), ("resnet18 replicate", same)):
        mean, std, n = out["summaries"]["regular"][label]["metrics"]["all"]
        assert (mean, std, n) == pytest.approx((np.mean([r["mIoU"] for _, r in arm]),
                                                np.std([r["mIoU"] for _, r in arm], ddof=1), 2))
    skipped = out["comparisons"]["regular"]["resnet18 partial − resnet18 zeros"]
    assert skipped["rows"] == {} and "were scored on different images (12 vs 10 images)" in skipped["not_compared"]
    assert "**resnet18 partial − resnet18 zeros, regular inference**: not compared: " in text
    kept = out["comparisons"]["regular"]["resnet18 replicate − resnet18 zeros"]["rows"]["all"]
    paired = sps.ttest_rel([r["mIoU"] for _, r in same], [r["mIoU"] for _, r in zeros]).confidence_interval(0.95)
    assert kept["seeds"] == pytest.approx([paired.low, paired.high], abs=1e-9)


# ---------------------------------------------------------------- library API, shared seeds, power, CSV / LaTeX
def test_arms_sharing_some_seeds_are_paired_on_those_and_the_table_says_so(tmp_path):
    import seg
    rng = np.random.default_rng(6)
    zeros = [write_run(tmp_path, f"z{s}", rng, 0.5, s, "zeros") for s in (0, 1, 2, 3)]
    partial = [write_run(tmp_path, f"p{s}", rng, 0.4, s, "partial") for s in (1, 2, 3, 9)]
    result = seg.compare([p for p, _ in zeros + partial], resamples=20, effect=0.3)
    cmp = result.comparisons["regular"]["resnet18 partial − resnet18 zeros"]
    a = {r["train_seed"]: r["mIoU"] for _, r in zeros}
    b = {r["train_seed"]: r["mIoU"] for _, r in partial}
    shared = [1, 2, 3]
    ref = sps.ttest_rel([b[s] for s in shared], [a[s] for s in shared]).confidence_interval(0.95)
    row = cmp["rows"]["all"]
    assert row["seeds"] == pytest.approx((ref.low, ref.high), abs=1e-9)
    assert row["diff"] == pytest.approx(np.mean([b[s] - a[s] for s in shared]), abs=1e-9)
    assert cmp["seed_method"] == "paired t on 3 of 5 seeds (the seeds both arms hold)"
    text = result.markdown()
    assert "(paired t on 3 of 5 seeds (the seeds both arms hold))" in text
    # power from the spread of the paired differences, against statsmodels-free scipy formulas
    sd = np.std([b[s] - a[s] for s in shared], ddof=1)
    crit = sps.t.ppf(0.975, 2)
    mdd = cmp["power"]["min_detectable"]
    assert sps.nct.sf(crit, 2, mdd * np.sqrt(3) / sd) + sps.nct.cdf(-crit, 2, mdd * np.sqrt(3) / sd) == \
        pytest.approx(0.8, abs=1e-6)
    n = cmp["power"]["seeds_needed"]
    power = [sps.nct.sf(sps.t.ppf(0.975, k - 1), k - 1, 0.3 * np.sqrt(k) / sd) for k in (n - 1, n)]
    assert power[1] >= 0.8 > power[0] or n == 2
    power_row = next(line for line in text.splitlines() if line.startswith("| resnet18 partial − resnet18 zeros | 3 |"))
    assert f"| {sd:.2f} | {mdd:.2f} | {n} |" in power_row


def test_every_table_is_also_csv_and_latex(tmp_path):
    import csv
    rng = np.random.default_rng(7)
    runs = [write_run(tmp_path, f"{pad}{s}", rng, noise, s, pad) for s in range(2)
            for pad, noise in (("zeros", 0.5), ("partial", 0.4))]
    text = _tool().main([p for p, _ in runs] + ["--out-dir", str(tmp_path / "out"), "--resamples", "20",
                                                "--effect", "0.3"])
    tables = tmp_path / "out" / "tables"
    names = {p.stem for p in tables.iterdir()}
    assert names == {"miou_by_mode", "regular_miou", "regular_power", "regular_leave_out", "regular_distance_bands",
                     "regular_classes"}
    for name in names:
        assert {p.suffix for p in tables.glob(f"{name}.*")} == {".csv", ".tex"}
        latex = (tables / f"{name}.tex").read_text()
        assert "\\toprule" in latex and "\\bottomrule" in latex
    rows = list(csv.reader(open(tables / "regular_miou.csv")))
    md_row = next(line for line in text.splitlines() if line.startswith("| all pixels |"))
    assert rows[1] == [c.strip() for c in md_row.strip("|").split("|")]  # the same cells as compare.md
    z = [r["mIoU"] for _, r in runs if r["trained_padding"] == "zeros"]
    assert rows[1][1] == f"{np.mean(z):.2f} ± {np.std(z, ddof=1):.2f} (2)"
    assert "seeds for ±0.30 (80% power)" in open(tables / "regular_power.csv").read()


def test_an_effect_beyond_reach_is_reported_not_raised():
    from seg.evaluation.compare import power_summary, power_table
    power = power_summary({"paired_n": 3, "paired_sd": 100.0, "diff": 1.0}, 0.3)
    assert power["seeds_needed"] is None  # about 900 000 seeds: beyond the search
    table = power_table("regular", {"b − a": {"power": power}}, 0.3)
    assert table.rows[0][4] == "> 100000"
