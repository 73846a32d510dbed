"""proxy/readout/sequential.py against published values (GrowthBook's gbstats tests of its
sequential t-test: packages/stats/tests/frequentist/test_tests.py) and hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from proxy.readout.sequential import (
    Ratio,
    always_valid_p,
    cs_halfwidth,
    fixed_halfwidth,
    fixed_p,
    mean_estimate,
    ratio_estimate,
    relative_lift,
    sequential_rho,
)


def sample_mean(total: float, squares: float, n: int) -> Ratio:
    """A mean from its sums, as gbstats' SampleMeanStatistic holds it."""
    var = (squares - total * total / n) / (n - 1)
    return Ratio(n, total / n, var / n)


# gbstats TestSequentialTTest: stat_a (control) and stat_b.
CONTROL = sample_mean(1396.87, 52377.9767, 3000)
TREATMENT = sample_mean(2422.7, 134698.29, 3461)


def test_relative_lift_matches_gbstats() -> None:
    got = relative_lift(TREATMENT, CONTROL)
    assert got is not None and got[1] is not None
    lift, var = got
    assert lift == pytest.approx(0.5033610858562358, rel=1e-12)
    assert math.sqrt(var) == pytest.approx(0.3334122146400735, rel=1e-12)


def test_confidence_sequence_matches_gbstats() -> None:
    lift, var = relative_lift(TREATMENT, CONTROL)  # type: ignore[misc]
    assert var is not None
    n = 3000 + 3461
    # sequential_tuning_parameter=1000: ci (-0.55844, 1.56516).
    half = cs_halfwidth(var, n, 0.05, 1000, 0.05)
    assert (lift - half, lift + half) == pytest.approx((-0.55844, 1.56516), abs=5e-6)
    # Tuned near the sample (6461) it is narrowest; far below or above, wider.
    near = cs_halfwidth(var, n, 0.05, n, 0.05)
    assert near < cs_halfwidth(var, n, 0.05, 10_000, 0.05) < cs_halfwidth(var, n, 0.05, 10, 0.05)
    # Always wider than the fixed-horizon interval: the price of reading at any time.
    assert near > fixed_halfwidth(var, 0.05)


def test_rho_by_hand() -> None:
    # rho = sqrt((-2 ln a + ln(-2 ln a + 1)) / N*) at a = 0.05, N* = 5000.
    log_term = 5.991464547107979  # -2 ln 0.05
    assert sequential_rho(0.05, 5000) == pytest.approx(
        math.sqrt((log_term + math.log(log_term + 1)) / 5000), rel=1e-15
    )
    assert sequential_rho(0.05, 5000) == pytest.approx(0.0398398, rel=1e-5)


def test_always_valid_p_is_where_the_sequence_touches_zero() -> None:
    var, n, expected = 0.0004, 4000, 5000.0
    for alpha in (0.2, 0.05, 0.01, 1e-4):
        # An estimate exactly at the (1 - alpha) sequence's edge has p = alpha.
        edge = cs_halfwidth(var, n, alpha, expected, 0.05)
        assert always_valid_p(edge, var, n, 0.05, expected) == pytest.approx(alpha, rel=1e-9)
        assert always_valid_p(-edge, var, n, 0.05, expected) == pytest.approx(alpha, rel=1e-9)
    assert always_valid_p(0.0, var, n, 0.05, expected) == 1.0
    assert always_valid_p(0.001, 0.0, n, 0.05, expected) == 0.0
    # Larger than the fixed-horizon p of the same estimate.
    assert always_valid_p(0.05, var, n, 0.05, expected) > fixed_p(0.05, var)


def test_fixed_horizon_by_hand() -> None:
    assert fixed_p(1.959963984540054, 1.0) == pytest.approx(0.05, rel=1e-12)
    assert fixed_p(-3.0, 4.0) == pytest.approx(math.erfc(1.5 / math.sqrt(2)), rel=1e-15)
    assert fixed_halfwidth(4.0, 0.05) == pytest.approx(2 * 1.959963984540054, rel=1e-12)


def test_ratio_estimate_by_hand() -> None:
    # Units with 1, 2, 3 exposures, of which 0, 1, 1 clicked: R = 2/6; residuals
    # x - R n = (-1/3, 1/3, 0); Var = (2/9) / 2; mean n = 2: Var(R) = (1/9) / (3 * 4).
    r = ratio_estimate(np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.0, 1.0]))
    assert r is not None and r.units == 3
    assert r.ratio == pytest.approx(1 / 3, rel=1e-15)
    assert r.variance == pytest.approx(1 / 108, rel=1e-12)
    # One exposure a unit: the binomial p (1 - p) / (m - 1).
    x = np.array([1.0] * 30 + [0.0] * 70)
    b = ratio_estimate(np.ones(100), x)
    assert b is not None and b.variance == pytest.approx(0.3 * 0.7 / 99, rel=1e-12)
    assert ratio_estimate(np.array([]), np.array([])) is None
    single = ratio_estimate(np.array([4.0]), np.array([1.0]))
    assert single is not None and single.variance is None


def test_a_heavy_unit_widens_the_interval() -> None:
    """The same 200 exposures and 40 clicks: spread over 200 users, or with one user
    holding 101 of them (and 30 of the clicks), the per-unit variance is larger."""
    even = ratio_estimate(np.ones(200), np.array([1.0] * 40 + [0.0] * 160))
    n = np.array([101.0] + [1.0] * 99)
    x = np.array([30.0] + [1.0] * 10 + [0.0] * 89)
    heavy = ratio_estimate(n, x)
    assert even is not None and heavy is not None
    assert even.ratio == heavy.ratio == 0.2
    assert heavy.variance > 3 * even.variance  # type: ignore[operator]


def test_mean_estimate_and_lift_edges() -> None:
    votes = mean_estimate(np.array([1.0, -1.0, -1.0, 0.0]))
    assert votes is not None and votes.ratio == -0.25
    # Var of (1, -1, -1, 0) with m - 1: (1.5625 + 0.5625 * 2 + 0.0625) / 3; over m.
    assert votes.variance == pytest.approx((1.5625 + 0.5625 * 2 + 0.0625) / 3 / 4, rel=1e-12)
    assert relative_lift(Ratio(10, 0.1, 0.01), Ratio(10, 0.0, 0.0)) is None
    assert relative_lift(Ratio(1, 0.1, None), Ratio(10, 0.2, 0.01)) == (-0.5, None)
