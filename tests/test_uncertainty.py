"""Intervals of seg.evaluation.uncertainty against scipy.stats and a naive float64 bootstrap."""
import math

import numpy as np
import pytest
from scipy import stats as sps

from seg.evaluation.uncertainty import (
    bootstrap_difference,
    difference_interval,
    excludes_zero,
    mean_std,
    prediction_interval,
    t_cdf,
    t_ppf,
)


@pytest.mark.parametrize("df", [1, 2, 3.7, 10, 57.3])
def test_t_quantiles_and_cdf_match_scipy(df):
    for q in (0.5, 0.9, 0.975, 0.995, 0.025):
        assert t_ppf(q, df) == pytest.approx(sps.t.ppf(q, df), abs=1e-7)
    for x in (-3.0, -0.4, 0.0, 1.1, 6.0):
        assert t_cdf(x, df) == pytest.approx(sps.t.cdf(x, df), abs=1e-9)


def test_mean_std_is_sample_std():
    v = [31.2, 29.8, 30.9, 28.4]
    mean, std, n = mean_std(v)
    assert (mean, n) == (pytest.approx(np.mean(v)), 4) and std == pytest.approx(np.std(v, ddof=1))
    assert math.isnan(mean_std([3.0])[1])


def test_paired_interval_matches_scipy_ttest_rel_and_pairs_by_seed():
    a = np.array([20.1, 22.5, 21.0, 23.9])
    b = np.array([21.0, 22.9, 22.4, 24.0])
    ref = sps.ttest_rel(b, a).confidence_interval(0.95)
    order = [2, 0, 3, 1]  # arm b listed in another seed order: pairing must follow the seeds
    got = difference_interval(a, b[order], seeds_a=[0, 1, 2, 3], seeds_b=[2, 0, 3, 1])
    assert got["method"].startswith("paired t")
    assert (got["low"], got["high"]) == (pytest.approx(ref.low, abs=1e-9), pytest.approx(ref.high, abs=1e-9))
    assert got["diff"] == pytest.approx(b.mean() - a.mean())


def test_welch_interval_matches_scipy_when_seeds_differ():
    a = np.array([20.1, 22.5, 21.0])
    b = np.array([24.0, 23.1, 26.2, 25.0])
    ref = sps.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    for seeds_b in ([5, 6, 7, 8], None):
        got = difference_interval(a, b, seeds_a=[0, 1, 2], seeds_b=seeds_b)
        assert got["method"].startswith("Welch")
        assert (got["low"], got["high"]) == (pytest.approx(ref.low, abs=1e-9), pytest.approx(ref.high, abs=1e-9))


def test_arms_sharing_some_seeds_are_paired_on_the_shared_ones():
    a = {0: 20.1, 1: 22.5, 2: 21.0, 3: 23.9}  # seed -> mIoU
    b = {1: 22.9, 2: 22.4, 3: 24.0, 7: 30.0, 0: 21.0}
    shared = [1, 2, 3, 0]
    ref = sps.ttest_rel([b[s] for s in shared], [a[s] for s in shared]).confidence_interval(0.95)
    got = difference_interval(list(a.values()), list(b.values()), seeds_a=list(a), seeds_b=list(b))
    assert got["method"] == "paired t on 4 of 5 seeds (the seeds both arms hold)"
    assert (got["low"], got["high"]) == (pytest.approx(ref.low, abs=1e-9), pytest.approx(ref.high, abs=1e-9))
    assert got["diff"] == pytest.approx(np.mean([b[s] - a[s] for s in shared]), abs=1e-12)
    assert got["paired_n"] == 4 and got["paired_sd"] == pytest.approx(np.std([b[s] - a[s] for s in shared], ddof=1))
    one = difference_interval([1.0, 2.0, 4.0], [2.0, 5.0, 3.0], seeds_a=[0, 1, 2], seeds_b=[2, 8, 9])
    assert one["method"].startswith("Welch")  # a single shared seed: nothing to pair


def test_prediction_interval_of_a_fresh_mean_matches_scipy_t():
    v = np.array([12.1, 10.4, 13.0])
    for new in (None, 1, 5):
        m = 3 if new is None else new
        ref = sps.t.interval(0.95, 2, loc=v.mean(), scale=v.std(ddof=1) * np.sqrt(1 / 3 + 1 / m))
        assert prediction_interval(v, new) == pytest.approx(ref, abs=1e-9)
    assert all(math.isnan(x) for x in prediction_interval([1.0]))


def test_single_run_has_no_interval():
    got = difference_interval([20.0], [21.0], [0], [0])
    assert math.isnan(got["low"]) and "single run" in got["method"] and excludes_zero(got["low"], got["high"]) is None


# ----------------------------------------------------------------------------- bootstrap
K, REGIONS = 4, ["all", "band 0-4"]


def _run(rng, num_images, noise):
    """Per-image stats of predictions that copy the truth except a ``noise`` fraction of random pixels."""
    inter, pred, gt = (np.zeros((num_images, len(REGIONS), K), np.int64) for _ in range(3))
    for n in range(num_images):
        truth = rng.integers(0, K, (12, 12))
        guess = np.where(rng.random(truth.shape) < noise, rng.integers(0, K, truth.shape), truth)
        regions = [np.ones_like(truth, bool), np.zeros_like(truth, bool)]
        regions[1][:4], regions[1][-4:], regions[1][:, :4], regions[1][:, -4:] = True, True, True, True
        for r, mask in enumerate(regions):
            for c in range(K):
                inter[n, r, c] = ((truth == c) & (guess == c) & mask).sum()
                pred[n, r, c] = ((guess == c) & mask).sum()
                gt[n, r, c] = ((truth == c) & mask).sum()
    return {"intersection": inter, "prediction": pred, "ground_truth": gt, "regions": REGIONS,
            "images": [f"img{n}" for n in range(num_images)]}


def _naive_miou(stats, rows, region):
    """Plain float64 loops over one resample's image rows."""
    ious = []
    for c in range(K):
        i = float(sum(stats["intersection"][n, region, c] for n in rows))
        u = float(sum(stats["prediction"][n, region, c] + stats["ground_truth"][n, region, c] for n in rows)) - i
        if u > 0:
            ious.append(100.0 * i / u)
    return sum(ious) / len(ious)


def test_bootstrap_matches_naive_loop_and_is_reproducible():
    rng = np.random.default_rng(1)
    arm_a = [_run(rng, 9, 0.5), _run(rng, 9, 0.5)]
    arm_b = [_run(rng, 9, 0.4), _run(rng, 9, 0.45)]
    got = bootstrap_difference(arm_a, arm_b, resamples=50, seed=7)
    draws = np.random.default_rng(7).integers(0, 9, size=(50, 9))  # the documented draw
    for r, label in enumerate(REGIONS):
        diffs = [np.mean([_naive_miou(s, row, r) for s in arm_b]) - np.mean([_naive_miou(s, row, r) for s in arm_a])
                 for row in draws]
        assert got["regions"][label] == pytest.approx(tuple(np.percentile(diffs, [2.5, 97.5])), abs=1e-9)
    assert bootstrap_difference(arm_a, arm_b, resamples=50, seed=7) == got
    assert bootstrap_difference(arm_a, arm_b, resamples=50, seed=8)["regions"] != got["regions"]


def test_identical_arms_contain_zero_and_a_large_difference_excludes_it():
    rng = np.random.default_rng(2)
    runs = [_run(rng, 20, 0.5) for _ in range(3)]
    same = bootstrap_difference(runs, runs, resamples=200, seed=0)
    assert all(lo <= 0 <= hi for lo, hi in same["regions"].values())
    assert all(lo <= 0 <= hi for lo, hi in same["classes"])
    better = [_run(rng, 20, 0.1) for _ in range(3)]  # injected: 10% instead of 50% of pixels wrong
    big = bootstrap_difference(runs, better, resamples=200, seed=0)
    assert all(excludes_zero(lo, hi) and lo > 0 for lo, hi in big["regions"].values())
    assert all(lo > 0 for lo, hi in big["classes"])


def test_bootstrap_refuses_runs_on_different_images():
    rng = np.random.default_rng(3)
    a, b = _run(rng, 5, 0.5), _run(rng, 5, 0.5)
    b["images"] = b["images"][::-1]
    with pytest.raises(ValueError, match="same images"):
        bootstrap_difference([a], [b], resamples=10)
