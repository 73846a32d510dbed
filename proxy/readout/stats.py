"""The few statistics the experiment readout needs, in plain Python (no scipy).

Proportions (Wilson interval, two-proportion z-test), the chi-square survival function
for integer degrees of freedom (closed form), a goodness-of-fit test, the exact sign test,
and the rank agreement of two orders of item ids (Kendall tau, top-k overlap). Every
function is pure and takes counts or id sequences, so the live admin view and the shadow
scorer can call them too.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

__all__ = [
    "SIGN_TEST_EXACT_MAX",
    "Z95",
    "chi2_sf",
    "chi_square_gof",
    "holm_adjust",
    "kendall_tau",
    "normal_cdf",
    "normal_quantile",
    "normal_sf",
    "sign_test",
    "top_k_overlap",
    "two_proportion_z_test",
    "wilson_interval",
]

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: a two-sided 95% interval
SIGN_TEST_EXACT_MAX = 1000  # above this many trials the sign test uses the normal curve

_SQRT2 = math.sqrt(2.0)


def normal_cdf(z: float) -> float:
    """P(Z <= z) for a standard normal Z."""
    # erfc keeps its relative precision in the far tails, where 1 - erf would cancel.
    return 0.5 * math.erfc(-z / _SQRT2)


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / _SQRT2)


def normal_quantile(p: float) -> float:
    """The z with P(Z <= z) = p, for 0 < p < 1: bisection on :func:`normal_cdf` (exact to
    the last few bits; the readout asks for a handful of quantiles, so speed is moot)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"want 0 < p < 1, got {p}")
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if mid in (lo, hi):
            break
        if normal_cdf(mid) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def holm_adjust(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (Holm 1979), in the order given; None stays None
    and does not count as a test. Reject where the adjusted p < alpha: the chance of any
    false rejection among the tests stays under alpha."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    k = len(tested)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (k - rank) * p))
        out[i] = running
    return out


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval for a proportion (95% by default); None when n is 0.

    Unlike the normal (Wald) interval it stays inside [0, 1] and is honest at 0 or n
    successes and for small n, which is what a fresh arm's click-through rate looks like.
    """
    if n <= 0:
        return None
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be 0..{n}, got {successes}")
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    lo = 0.0 if successes == 0 else max(0.0, center - half)
    hi = 1.0 if successes == n else min(1.0, center + half)
    return lo, hi


def two_proportion_z_test(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float] | None:
    """(z, two-sided p) for H0: the two proportions are equal, with the pooled standard
    error. None when either sample is empty or both proportions are 0 or 1 (no variance:
    nothing to test)."""
    if n1 <= 0 or n2 <= 0:
        return None
    pooled = (x1 + x2) / (n1 + n2)
    var = pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)
    if var <= 0.0:
        return None
    z = (x1 / n1 - x2 / n2) / math.sqrt(var)
    return z, math.erfc(abs(z) / _SQRT2)


def chi2_sf(x: float, df: int) -> float:
    """P(X > x) for X chi-square with an integer number of degrees of freedom.

    Closed forms: for even df = 2m, exp(-x/2) * sum_{i<m} (x/2)^i / i!; for odd df = 2m+1,
    erfc(sqrt(x/2)) + exp(-x/2) * sum_{i=1..m} (x/2)^(i-1/2) / Gamma(i+1/2). The terms are
    summed in log space so large x or df neither overflow nor lose the tail.
    """
    if df < 1 or int(df) != df:
        raise ValueError(f"degrees of freedom must be a positive integer, got {df}")
    if x <= 0.0:
        return 1.0
    half = x / 2.0
    log_half = math.log(half)
    if df % 2 == 0:
        total = sum(math.exp(-half + i * log_half - math.lgamma(i + 1)) for i in range(df // 2))
    else:
        total = math.erfc(math.sqrt(half)) + sum(
            math.exp(-half + (i - 0.5) * log_half - math.lgamma(i + 0.5))
            for i in range(1, df // 2 + 1)
        )
    return min(1.0, total)


def chi_square_gof(
    observed: Sequence[int], expected_shares: Sequence[float]
) -> tuple[float, int, float] | None:
    """Pearson's goodness-of-fit test of counts against expected shares: (statistic,
    degrees of freedom, p-value). Categories expected to be empty are left out, unless
    something was observed in one: then the fit is impossible and p is 0. None when fewer
    than two categories remain or nothing was observed."""
    if len(observed) != len(expected_shares):
        raise ValueError("observed and expected_shares differ in length")
    n = sum(observed)
    total_share = sum(expected_shares)
    if n <= 0 or total_share <= 0:
        return None
    stat = 0.0
    categories = 0
    for count, share in zip(observed, expected_shares, strict=True):
        expected = n * share / total_share
        if expected <= 0.0:
            if count > 0:
                return math.inf, max(1, len(observed) - 1), 0.0
            continue
        stat += (count - expected) ** 2 / expected
        categories += 1
    if categories < 2:
        return None
    return stat, categories - 1, chi2_sf(stat, categories - 1)


def sign_test(wins_a: int, wins_b: int) -> float | None:
    """Two-sided sign test p-value of H0 "A and B win equally often" (ties left out).

    Exact binomial tail up to SIGN_TEST_EXACT_MAX trials (integer arithmetic, so no
    rounding builds up), the normal approximation with continuity correction above.
    None without a single win.
    """
    n = wins_a + wins_b
    if n <= 0:
        return None
    k = min(wins_a, wins_b)
    if n <= SIGN_TEST_EXACT_MAX:
        tail = sum(math.comb(n, i) for i in range(k + 1))
        return min(1.0, 2 * tail / 2**n)
    z = (abs(wins_a - n / 2.0) - 0.5) / (math.sqrt(n) / 2.0)
    return min(1.0, math.erfc(max(z, 0.0) / _SQRT2))


def kendall_tau(order_a: Sequence[Hashable], order_b: Sequence[Hashable]) -> float | None:
    """Kendall's tau between two orders of ids, over the ids both hold (each id once).

    1: the common ids come in the same order; -1: reversed. None with fewer than two
    common ids. O(n^2) pairs, fine for a served list's first few dozen items.
    """
    pos_b = {item: i for i, item in enumerate(order_b)}
    seen: set[Hashable] = set()
    ranks: list[int] = []
    for item in order_a:
        if item in pos_b and item not in seen:
            seen.add(item)
            ranks.append(pos_b[item])
    n = len(ranks)
    if n < 2:
        return None
    score = 0
    for i in range(n - 1):
        ri = ranks[i]
        for j in range(i + 1, n):
            score += 1 if ranks[j] > ri else -1
    return score / (n * (n - 1) / 2)


def top_k_overlap(
    order_a: Sequence[Hashable], order_b: Sequence[Hashable], k: int = 10
) -> float | None:
    """The share of the first k ids that the two orders have in common, over
    min(k, len(a), len(b)) (so two 5-item lists with the same items score 1). None when
    either is empty."""
    size = min(k, len(order_a), len(order_b))
    if size <= 0:
        return None
    return len(set(order_a[:k]) & set(order_b[:k])) / size
