"""Per-unit estimates and always-valid inference for the readout.

Users, not exposures, are the independent observations: a user who makes fifty
exposures with their own taste in clicks is one draw, not fifty. A click-through rate is
therefore a ratio of two per-unit sums, sum(clicked exposures) / sum(exposures), with the
delta-method variance of a ratio of means (Deng et al. 2018, "Applying the Delta Method in
Metric Analytics"); the lift of one arm over another is a ratio of two such ratios, again
by the delta method (GrowthBook's frequentist relative lift).

A report read every day must not find a difference by looking often. The default is the
asymptotic confidence sequence of Waudby-Smith et al. (arXiv 2103.06476) as GrowthBook
ships it: a normal-mixture boundary tuned by rho to be narrowest at ``expected`` units; its
p-value is the smallest alpha whose sequence excludes 0 (the mixture SPRT's 1 / Lambda),
so "p < alpha" and "the interval excludes 0" always agree. The fixed-horizon versions
(the z interval and z-test) are valid only when read once, at a size planned ahead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from proxy.readout.stats import normal_quantile

__all__ = [
    "Ratio",
    "always_valid_p",
    "cs_halfwidth",
    "fixed_halfwidth",
    "fixed_p",
    "mean_estimate",
    "ratio_estimate",
    "relative_lift",
    "sequential_rho",
]

Counts = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Ratio:
    """sum(x) / sum(n) over ``units`` units, and the variance of that estimate."""

    units: int
    ratio: float
    variance: float | None  # None below two units: nothing to estimate it from


def ratio_estimate(n: Counts, x: Counts) -> Ratio | None:
    """The ratio of per-unit sums (``n[i]`` exposures, ``x[i]`` of them clicked, per unit)
    with its delta-method variance: Var(x - R n) / (m * mean(n)^2), Var with m - 1 (for
    n all 1 it is the binomial p(1-p)/(m-1)). None without a single exposure."""
    m = len(n)
    total = float(n.sum())
    if m == 0 or total <= 0:
        return None
    r = float(x.sum()) / total
    if m < 2:
        return Ratio(m, r, None)
    residual = x - r * n
    mean_n = total / m
    var = float(residual @ residual) / (m - 1) / (m * mean_n * mean_n)
    return Ratio(m, r, var)


def mean_estimate(scores: Counts) -> Ratio | None:
    """A mean over units (each unit's score, e.g. its interleaving vote) and its variance."""
    return ratio_estimate(np.ones_like(scores), scores)


def relative_lift(test: Ratio, base: Ratio) -> tuple[float, float | None] | None:
    """(test / base - 1, its delta-method variance); None when the base is 0."""
    if base.ratio <= 0:
        return None
    lift = test.ratio / base.ratio - 1.0
    if test.variance is None or base.variance is None:
        return lift, None
    b2 = base.ratio * base.ratio
    var = test.variance / b2 + test.ratio * test.ratio * base.variance / (b2 * b2)
    return lift, var


def sequential_rho(alpha: float, expected: float) -> float:
    """The mixture's tuning: the boundary is narrowest near ``expected`` observations."""
    log_term = -2.0 * math.log(alpha)
    return math.sqrt((log_term + math.log(log_term + 1.0)) / expected)


def cs_halfwidth(
    variance: float, n: int, alpha: float, expected: float, tune_alpha: float
) -> float:
    """Half the width of the (1 - alpha) asymptotic confidence sequence of an estimate with
    ``variance`` from ``n`` observations (sigma^2 = variance * n per observation), with rho
    tuned at ``tune_alpha`` (a Holm step may ask for a smaller alpha on the same rho)."""
    rho2 = sequential_rho(tune_alpha, expected) ** 2
    v = n * rho2
    return math.sqrt(variance * n) * math.sqrt(
        2.0 * (v + 1.0) / (n * n * rho2) * math.log(math.sqrt(v + 1.0) / alpha)
    )


def always_valid_p(
    estimate: float, variance: float, n: int, alpha: float, expected: float
) -> float:
    """The alpha at which the confidence sequence's edge touches 0 (H0: no difference):
    sqrt(V + 1) * exp(-z^2 V / (2 (V + 1))) with V = n rho^2 and z = estimate / se."""
    if variance <= 0.0:
        return 0.0 if estimate != 0.0 else 1.0
    v = n * sequential_rho(alpha, expected) ** 2
    z2 = estimate * estimate / variance
    log_p = 0.5 * math.log(v + 1.0) - z2 * v / (2.0 * (v + 1.0))
    return 1.0 if log_p >= 0.0 else math.exp(log_p)


def fixed_halfwidth(variance: float, alpha: float) -> float:
    """The two-sided (1 - alpha) normal interval's half width."""
    return normal_quantile(1.0 - alpha / 2.0) * math.sqrt(variance)


def fixed_p(estimate: float, variance: float) -> float:
    """The two-sided z-test p-value of H0: the estimate is 0."""
    if variance <= 0.0:
        return 0.0 if estimate != 0.0 else 1.0
    return math.erfc(abs(estimate) / math.sqrt(2.0 * variance))
