"""Uncertainty of a comparison between two arms (e.g. zero vs partial padding).

Two sources, reported separately because they answer different questions:

* **Training (run-to-run)**: each arm is several trainings (seeds). The difference of the arm means gets a
  Student-t interval, *paired* by seed on the seeds both arms hold (the paired difference removes what a
  seed shares between arms: initialisation and data order), *Welch* over all runs when they share fewer than 2.
* **Test set (image sampling)**: a paired bootstrap over images. Every resample draws N of the N images
  with replacement, ``numpy.random.default_rng(seed).integers(0, N, size=(B, N))``, the same draw for
  every run of both arms; each run's IoUs are recomputed from its per-image counts summed over the draw,
  and the percentile interval of the difference of arm means is reported.

Student-t quantiles are computed here (no scipy at run time): the CDF by Simpson integration of the
density, the quantile by bisection; tests check them against ``scipy.stats``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from seg.errors import InputError

from .stats import iou_from_counts, miou_from_iou

__all__ = ["LEVEL", "DEFAULT_RESAMPLES", "t_cdf", "t_ppf", "mean_std", "difference_interval", "prediction_interval",
           "shared_seeds", "bootstrap_draws",
           "bootstrap_difference", "excludes_zero"]

LEVEL = 0.95  # two-sided coverage of every interval
DEFAULT_RESAMPLES = 1000


def _t_density(x: np.ndarray, df: float) -> np.ndarray:
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return np.exp(log_norm - (df + 1) / 2 * np.log1p(x * x / df))


def t_cdf(x: float, df: float, intervals: int = 4096) -> float:
    """P(T <= x) for Student's t with ``df`` > 0 degrees of freedom (any real df, as Welch needs)."""
    if not df > 0:
        raise InputError(f"degrees of freedom must be > 0, got {df}")
    grid = np.linspace(0.0, abs(x), intervals + 1)
    weights = np.ones(intervals + 1)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0  # Simpson's rule
    half = float((weights * _t_density(grid, df)).sum() * abs(x) / (3 * intervals))
    return 0.5 + math.copysign(half, x)


def t_ppf(q: float, df: float) -> float:
    """Quantile of Student's t: the x with t_cdf(x, df) = q, by bisection."""
    if not 0.0 < q < 1.0:
        raise InputError(f"quantile level must lie in (0, 1), got {q}")
    if q < 0.5:
        return -t_ppf(1.0 - q, df)
    hi = 1.0
    while t_cdf(hi, df) < q:
        hi *= 2.0
    lo = 0.0
    for _ in range(60):  # 2**-60 of the bracket: far below float display precision
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < q else (lo, mid)
    return 0.5 * (lo + hi)


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample standard deviation with n-1, n); std is NaN for a single value."""
    v = np.asarray(values, np.float64)
    n = v.size
    return (float(v.mean()) if n else math.nan, float(v.std(ddof=1)) if n > 1 else math.nan, n)


def _same_seeds(seeds_a: Sequence, seeds_b: Sequence) -> bool:
    known = None not in seeds_a and None not in seeds_b
    return known and len(set(seeds_a)) == len(seeds_a) and sorted(seeds_a) == sorted(seeds_b)


def shared_seeds(seeds_a: Sequence, seeds_b: Sequence) -> list:
    """The seeds both arms hold, in ``seeds_b``'s order; none when a seed is unknown or repeated in an arm
    (runs could not be matched one to one)."""
    a, b = list(seeds_a), list(seeds_b)
    if None in a or None in b or len(set(a)) != len(a) or len(set(b)) != len(b):
        return []
    return [s for s in b if s in set(a)]


def paired_differences(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, seeds_a: Sequence,
                       seeds_b: Sequence) -> list[float] | None:
    """b - a per training seed when both arms hold the same known, distinct seeds (in any order), else None."""
    if not _same_seeds(list(seeds_a), list(seeds_b)):
        return None
    by_seed = dict(zip(seeds_a, a))
    return [vb - by_seed[s] for s, vb in zip(seeds_b, b)]


def difference_interval(a: Sequence[float], b: Sequence[float], seeds_a: Sequence | None = None,
                        seeds_b: Sequence | None = None, level: float = LEVEL) -> dict:
    """Interval for the difference b minus a over runs.

    Paired t over the per-seed differences of the seeds both arms hold, when there are at least 2 (known,
    distinct within each arm): the difference is then the mean of those paired differences, over the shared
    seeds only, and the method says "paired t on k of m seeds" when the arms also hold seeds the other lacks.
    Otherwise Welch's t on mean(b) - mean(a) over all runs. Returns {"diff", "low", "high", "method", "df",
    "paired_sd", "paired_n"} (the last two: standard deviation and number of the paired differences, None
    when not paired); low / high are NaN when an arm has fewer than 2 runs (no spread to estimate).
    """
    runs_a, runs_b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    seeds_a = list(seeds_a) if seeds_a is not None else [None] * runs_a.size
    seeds_b = list(seeds_b) if seeds_b is not None else [None] * runs_b.size
    shared = shared_seeds(seeds_a, seeds_b)
    if len(shared) >= 2:
        by_seed_a, by_seed_b = dict(zip(seeds_a, runs_a)), dict(zip(seeds_b, runs_b))
        d = np.array([by_seed_b[s] - by_seed_a[s] for s in shared])
        seeds = len(set(seeds_a) | set(seeds_b))
        method = (f"paired t over {d.size} seeds" if d.size == seeds else
                  f"paired t on {d.size} of {seeds} seeds (the seeds both arms hold)")
        # all seeds shared: the difference of the arm means, as Welch's (equal up to rounding)
        diff = float(runs_b.mean() - runs_a.mean()) if d.size == seeds else float(d.mean())
        df, sd = d.size - 1, float(d.std(ddof=1))
        half = t_ppf(0.5 + level / 2, df) * (sd / math.sqrt(d.size))
        return {"diff": diff, "low": diff - half, "high": diff + half, "method": method, "df": float(df),
                "paired_sd": sd, "paired_n": int(d.size)}
    diff = float(runs_b.mean() - runs_a.mean())
    if runs_a.size < 2 or runs_b.size < 2:
        return {"diff": diff, "low": math.nan, "high": math.nan, "method": "no interval: an arm has a single run",
                "df": None, "paired_sd": None, "paired_n": None}
    va, vb = runs_a.var(ddof=1) / runs_a.size, runs_b.var(ddof=1) / runs_b.size
    se = math.sqrt(va + vb)
    if va + vb > 0:  # Welch-Satterthwaite
        df = (va + vb) ** 2 / (va ** 2 / (runs_a.size - 1) + vb ** 2 / (runs_b.size - 1))
    else:
        df = runs_a.size + runs_b.size - 2
    half = t_ppf(0.5 + level / 2, df) * se
    return {"diff": diff, "low": diff - half, "high": diff + half, "df": float(df), "paired_sd": None,
            "paired_n": None, "method": f"Welch t ({runs_a.size} vs {runs_b.size} runs, seeds not paired)"}


def prediction_interval(values: Sequence[float], new_runs: int | None = None, level: float = LEVEL) -> tuple:
    """Where the mean of ``new_runs`` fresh runs (default: as many as given) should fall with probability
    ``level`` if they scatter like ``values`` (e.g. a re-run on another machine, whose float rounding acts
    like another seed): mean ± t(n-1) * std * sqrt(1/n + 1/new_runs). (NaN, NaN) for fewer than 2 values."""
    v = np.asarray(values, np.float64)
    if v.size < 2:
        return math.nan, math.nan
    m = v.size if new_runs is None else new_runs
    half = t_ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) * math.sqrt(1 / v.size + 1 / m)
    return float(v.mean() - half), float(v.mean() + half)


def bootstrap_draws(num_images: int, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """(B, N) image indices, each row N draws with replacement; the same draws serve every run of both arms."""
    if num_images < 1 or resamples < 1:
        raise InputError(f"the bootstrap needs >= 1 image and >= 1 resample, got {num_images} and {resamples}")
    return np.random.default_rng(seed).integers(0, num_images, size=(resamples, num_images))


def _resampled_iou(stats: dict, weights: np.ndarray) -> np.ndarray:
    """(B, R, K) IoU of one run under every resample; ``weights`` (B, N) counts how often each image is drawn."""
    summed = [np.tensordot(weights, np.asarray(stats[name], np.float64), axes=(1, 0))
              for name in ("intersection", "prediction", "ground_truth")]
    return iou_from_counts(*summed)


def _arm_means(runs: list[dict], weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over an arm's runs of (B, R) mIoU per region and (B, K) class IoU of the whole image (over the
    runs where the class is defined; NaN where it is defined in none)."""
    ious = np.stack([_resampled_iou(stats, weights) for stats in runs])  # (runs, B, R, K)
    return miou_from_iou(ious).mean(0), miou_from_iou(np.moveaxis(ious[:, :, 0], 0, -1))


def _percentiles(samples: np.ndarray, level: float) -> np.ndarray:
    """(2, ...) percentile interval over axis 0, ignoring NaN resamples; NaN where all are NaN."""
    tails = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    out = np.full((2,) + samples.shape[1:], np.nan)
    finite = np.isfinite(samples).any(0)
    if finite.any():
        out[:, finite] = np.nanpercentile(samples[:, finite], tails, axis=0)
    return out


def bootstrap_difference(runs_a: list[dict], runs_b: list[dict], resamples: int = DEFAULT_RESAMPLES,
                         seed: int = 0, level: float = LEVEL) -> dict:
    """Paired bootstrap over images of mean(b) - mean(a) for every region's mIoU and every class IoU.

    ``runs_a`` / ``runs_b``: per-image statistics (:func:`seg.evaluation.stats.load_image_stats`) of each
    run of the arm, all on the same images in the same order and with the same regions.
    Returns {"regions": {label: (low, high)}, "classes": [(low, high)] per class, "resamples", "seed",
    "level", "num_images"}; a class undefined in every resample gets (NaN, NaN).
    """
    first = runs_a[0]
    for stats in runs_a + runs_b:
        if stats["images"] != first["images"] or stats["regions"] != first["regions"]:
            raise InputError("the bootstrap pairs images: every run must be evaluated on the same images with "
                             "the same leave-out proportions and distance bands")
    draws = bootstrap_draws(len(first["images"]), resamples, seed)
    weights = np.zeros(draws.shape, np.float64)
    np.add.at(weights, (np.arange(resamples)[:, None], draws), 1.0)
    miou_a, class_a = _arm_means(runs_a, weights)
    miou_b, class_b = _arm_means(runs_b, weights)
    regions = _percentiles(miou_b - miou_a, level)  # (2, R)
    classes = _percentiles(class_b - class_a, level)  # (2, K)
    return {"regions": {label: (float(lo), float(hi)) for label, lo, hi in zip(first["regions"], *regions)},
            "classes": [(float(lo), float(hi)) for lo, hi in zip(*classes)], "resamples": resamples,
            "seed": seed, "level": level, "num_images": len(first["images"])}


def excludes_zero(low: float, high: float) -> bool | None:
    """True when [low, high] lies wholly on one side of 0, None when there is no interval."""
    if math.isnan(low) or math.isnan(high):
        return None
    return low > 0 or high < 0
