"""Power of the paired comparison over seeds, for planning how many seeds an experiment needs.

The seed interval of :mod:`seg.evaluation.uncertainty` is a two-sided paired t interval: with n seeds, the
per-seed differences d_i (b minus a) give t = mean(d) / (sd(d) / sqrt(n)) on n - 1 degrees of freedom, and a
difference is *shown* when the 95% interval excludes 0, i.e. |t| > t_(1 - alpha/2, n - 1). If the differences
scatter normally around a true ``delta`` with standard deviation ``sd``, t follows a noncentral t with
noncentrality delta * sqrt(n) / sd, which gives the probabilities below.
"""
from __future__ import annotations

import math

from scipy import optimize
from scipy import stats as sps

from seg.config import ConfigError

__all__ = ["ALPHA", "POWER", "paired_power", "min_detectable_difference", "seeds_needed",
           "same_verdict_probability"]

ALPHA = 0.05  # two-sided, as the 95% intervals
POWER = 0.8
MAX_SEEDS = 100_000  # seeds_needed gives up beyond this (a difference far below the spread)


def _check(sd: float, n: int) -> None:
    if not n >= 2:
        raise ConfigError(f"a paired t test needs at least 2 seeds, got {n}")
    if not sd > 0:
        raise ConfigError(f"the standard deviation of the paired differences must be > 0, got {sd}")


def _tails(delta: float, sd: float, n: int, alpha: float) -> tuple[float, float]:
    """P(t > critical), P(t < -critical) for the paired t statistic under a true difference ``delta``."""
    _check(sd, n)
    df, nc = n - 1, delta * math.sqrt(n) / sd
    critical = sps.t.ppf(1 - alpha / 2, df)
    # the lower tail as the upper tail of the mirrored statistic: scipy's nct.cdf returns NaN far out in it
    return float(sps.nct.sf(critical, df, nc)), float(sps.nct.sf(critical, df, -nc))


def paired_power(delta: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Probability that a paired t interval over ``n`` seeds excludes 0 (two-sided ``alpha``), when the
    per-seed differences have mean ``delta`` and standard deviation ``sd``."""
    upper, lower = _tails(delta, sd, n, alpha)
    return upper + lower


def same_verdict_probability(true_delta: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Probability that a rerun with ``n`` fresh paired seeds shows the difference on the side of
    ``true_delta`` (its interval excludes 0 with the same sign; a rerun showing the opposite sign, or nothing,
    does not count). ``true_delta`` = 0 counts the positive side."""
    upper, lower = _tails(true_delta, sd, n, alpha)
    return lower if true_delta < 0 else upper


def min_detectable_difference(sd: float, n: int, power: float = POWER, alpha: float = ALPHA) -> float:
    """The smallest true difference (> 0) that ``n`` paired seeds show with probability ``power``."""
    _check(sd, n)
    if not alpha / 2 < power < 1:
        raise ConfigError(f"power must lie in (alpha/2, 1), got {power}")
    hi = sd
    while paired_power(hi, sd, n, alpha) < power:
        hi *= 2.0
    return float(optimize.brentq(lambda d: paired_power(d, sd, n, alpha) - power, 0.0, hi, xtol=1e-12 * sd))


def seeds_needed(delta: float, sd: float, power: float = POWER, alpha: float = ALPHA) -> int:
    """The fewest paired seeds (>= 2) that show a true difference ``delta`` with probability ``power``."""
    if not delta != 0:
        raise ConfigError("the difference to detect must not be 0")
    _check(sd, 2)
    if not 0 < power < 1:
        raise ConfigError(f"power must lie in (0, 1), got {power}")
    lo, hi = 1, 2  # paired_power(lo) < power <= paired_power(hi); power grows with n
    while paired_power(delta, sd, hi, alpha) < power:
        lo, hi = hi, hi * 2
        if hi > MAX_SEEDS:
            raise ConfigError(f"a difference of {delta:g} at a spread of {sd:g} needs more than {MAX_SEEDS} seeds")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if paired_power(delta, sd, mid, alpha) < power else (lo, mid)
    return hi
