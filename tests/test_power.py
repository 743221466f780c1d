"""seg.evaluation.power against statsmodels (when installed), an integral over the sample variance that does not
use the noncentral t, and a Monte-Carlo simulation of paired t tests."""
import math

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as sps

from seg.config import ConfigError
from seg.evaluation.power import min_detectable_difference, paired_power, same_verdict_probability, seeds_needed

CASES = [(0.3, 0.5, 3), (0.3, 0.5, 10), (1.0, 2.0, 5), (-0.8, 0.6, 4), (0.0, 1.0, 6), (2.5, 1.0, 2)]


def tails_by_integral(delta, sd, n, alpha=0.05):
    """P(t > c), P(t < -c) for t = mean(d) / (s / sqrt(n)), d ~ N(delta, sd): given the sample variance
    (V = (n-1) s^2 / sd^2 ~ chi2(n-1)) the mean is normal, so each tail is a normal probability integrated
    over V."""
    df = n - 1
    c = sps.t.ppf(1 - alpha / 2, df)
    shift = delta * math.sqrt(n) / sd

    def tail(sign):
        def f(v):
            bound = c * math.sqrt(v / df)  # |z + shift| beyond bound, z standard normal
            p = sps.norm.sf(bound - shift) if sign > 0 else sps.norm.cdf(-bound - shift)
            return p * sps.chi2.pdf(v, df)
        return integrate.quad(f, 0, np.inf, epsabs=1e-12, epsrel=1e-10, limit=200)[0]
    return tail(1), tail(-1)


def rejections_by_simulation(delta, sd, n, draws=200_000, seed=0):
    """(share of intervals above 0, share below 0) over simulated paired experiments."""
    d = np.random.default_rng(seed).normal(delta, sd, (draws, n))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    c = sps.t.ppf(0.975, n - 1)
    return (t > c).mean(), (t < -c).mean()


@pytest.mark.parametrize("delta,sd,n", CASES)
def test_power_matches_an_integral_over_the_sample_variance(delta, sd, n):
    upper, lower = tails_by_integral(delta, sd, n)
    assert paired_power(delta, sd, n) == pytest.approx(upper + lower, abs=1e-7)
    assert same_verdict_probability(delta, sd, n) == pytest.approx(lower if delta < 0 else upper, abs=1e-7)


@pytest.mark.parametrize("delta,sd,n", CASES)
def test_power_matches_simulated_paired_t_tests(delta, sd, n):
    upper, lower = rejections_by_simulation(delta, sd, n)
    se = math.sqrt(0.25 / 200_000)  # binomial standard error at worst
    assert paired_power(delta, sd, n) == pytest.approx(upper + lower, abs=5 * se)
    assert same_verdict_probability(delta, sd, n) == pytest.approx(lower if delta < 0 else upper, abs=5 * se)


def test_min_detectable_difference_and_seeds_needed_invert_the_power():
    for sd, n in ((0.5, 3), (2.0, 8), (1.0, 2)):
        mdd = min_detectable_difference(sd, n)
        upper, lower = tails_by_integral(mdd, sd, n)
        assert upper + lower == pytest.approx(0.8, abs=1e-7)
    for delta, sd in ((0.3, 0.5), (1.0, 3.0), (5.0, 1.0)):
        n = seeds_needed(delta, sd)
        assert sum(tails_by_integral(delta, sd, n)) >= 0.8 - 1e-9
        assert n == 2 or sum(tails_by_integral(delta, sd, n - 1)) < 0.8


def test_power_matches_statsmodels():
    power_mod = pytest.importorskip("statsmodels.stats.power")
    solver = power_mod.TTestPower()  # one-sample / paired t on the standardised effect delta / sd
    for delta, sd, n in CASES:
        assert paired_power(delta, sd, n) == pytest.approx(
            solver.power(effect_size=delta / sd, nobs=n, alpha=0.05, alternative="two-sided"), abs=1e-6)
    for sd, n in ((0.5, 3), (2.0, 8)):
        effect = solver.solve_power(nobs=n, alpha=0.05, power=0.8, alternative="two-sided")
        assert min_detectable_difference(sd, n) == pytest.approx(effect * sd, rel=1e-4)
    for delta, sd in ((0.3, 0.5), (1.0, 3.0)):
        nobs = solver.solve_power(effect_size=delta / sd, alpha=0.05, power=0.8, alternative="two-sided")
        assert seeds_needed(delta, sd) == math.ceil(nobs)


def test_bad_inputs_are_config_errors():
    for call in (lambda: paired_power(0.3, 0.5, 1), lambda: paired_power(0.3, 0.0, 4),
                 lambda: seeds_needed(0.0, 1.0), lambda: min_detectable_difference(1.0, 3, power=1.5),
                 lambda: seeds_needed(1e-6, 1e3)):
        with pytest.raises(ConfigError):
            call()
