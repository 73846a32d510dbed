"""The guardrails' decisions: one-sided sequential tests of an arm against the default arm
on live counts (proxy/experiments/guardrails.py keeps the counts).

Each test uses the always-valid machinery of the report (proxy/readout/sequential.py:
the asymptotic confidence sequence, Waudby-Smith et al.), read one-sidedly: an arm trips
when the whole sequence lies past the limit. The two-sided (1 - alpha) sequence is used
for the one side (crossing one side is no likelier than crossing either), so a check read
every second keeps P(an arm no worse than its limit ever trips) <= alpha; a route's limits
share alpha evenly (Bonferroni). Once tripped an arm stays tripped: there is no second
look that could flap it back.

    not_applied   the share of requests not re-ranked for the arm's own reasons minus the
                  default's: trips when the lower bound exceeds the limit (pp)
    added_p99_ms  T = the default's p99 + the limit; trips when the lower bound of the
                  arm's share of requests slower than T exceeds 1% (its p99 is then > T)
    ctr           the arm's CTR by unit over the default's, minus 1 (delta method over
                  units): trips when the upper bound is below the limit (%)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from proxy.config.guardrails import Guardrails
from proxy.readout.sequential import Ratio, cs_halfwidth, relative_lift

__all__ = ["ArmCounts", "Check", "bucket_of", "check_arm", "edge_ms", "p99_ms"]

# Latency histogram: bucket k holds [edge(k), edge(k+1)) ms, 10% wide from 20 us up.
_FIRST_MS = 0.02
_GROWTH = 1.1
_BUCKETS = 180  # the last reaches past a minute
_TAIL = 0.01  # a p99


def bucket_of(ms: float) -> int:
    if ms <= _FIRST_MS:
        return 0
    return min(_BUCKETS - 1, int(math.log(ms / _FIRST_MS) / math.log(_GROWTH)))


def edge_ms(k: int) -> float:
    return _FIRST_MS * _GROWTH**k


@dataclass
class ArmCounts:
    """One arm's live counts in the fleet since its test began."""

    requests: int = 0  # feed requests served by the arm's model (re-ranked or not)
    own: int = 0  # of those, not re-ranked for the arm's own reasons
    latency: dict[int, int] = field(default_factory=dict)  # bucket -> requests
    units: int = 0  # users with an exposure
    n: int = 0  # exposures of those users
    x: int = 0  # exposures with a click
    nn: int = 0  # sum over users of n^2, x^2, n x (the delta method's moments)
    xx: int = 0
    nx: int = 0

    @classmethod
    def from_hash(cls, fields: dict[str, int]) -> ArmCounts:
        out = cls(latency={})
        for key, value in fields.items():
            if key.startswith("l"):
                out.latency[int(key[1:])] = value
            elif key in _SCALARS:
                setattr(out, key, value)
        return out

    def ctr(self) -> Ratio | None:
        """CTR by unit with its delta-method variance (as ratio_estimate, from moments)."""
        m = self.units
        if m == 0 or self.n <= 0:
            return None
        r = self.x / self.n
        if m < 2:
            return Ratio(m, r, None)
        residual = self.xx - 2.0 * r * self.nx + r * r * self.nn  # sum (x - r n)^2
        mean_n = self.n / m
        return Ratio(m, r, max(residual, 0.0) / (m - 1) / (m * mean_n * mean_n))


_SCALARS = frozenset({"requests", "own", "units", "n", "x", "nn", "xx", "nx"})


@dataclass(frozen=True)
class Check:
    """One guardrail's reading: its figures, and whether it trips."""

    guardrail: str
    trips: bool
    figures: dict[str, Any]


def p99_ms(latency: dict[int, int]) -> float | None:
    """The upper edge of the bucket holding the p99 (an upper bound of it)."""
    total = sum(latency.values())
    if total == 0:
        return None
    seen = 0
    for k in sorted(latency):
        seen += latency[k]
        if seen >= (1.0 - _TAIL) * total:
            return edge_ms(k + 1)
    return edge_ms(_BUCKETS)


def _bound(variance: float, n: int, alpha: float, expected: int) -> float:
    return cs_halfwidth(variance, n, alpha, expected, alpha)


def _share_var(k: int, n: int) -> float:
    # (k + 1) / (n + 2): an arm failing on every request has a variance above 0.
    p = (k + 1) / (n + 2)
    return p * (1.0 - p) / n


def _not_applied(cfg: Guardrails, a: ArmCounts, b: ArmCounts, alpha: float) -> Check:
    limit = (cfg.not_applied or 0.0) / 100.0
    figures: dict[str, Any] = {"limit_pp": cfg.not_applied, "requests": a.requests}
    if min(a.requests, b.requests) < cfg.min_requests:
        return Check("not_applied", False, {**figures, "waiting": "min_requests"})
    diff = a.own / a.requests - b.own / b.requests
    var = _share_var(a.own, a.requests) + _share_var(b.own, b.requests)
    low = diff - _bound(var, a.requests + b.requests, alpha, cfg.expected)
    figures.update(
        arm_pct=round(100 * a.own / a.requests, 2),
        default_pct=round(100 * b.own / b.requests, 2),
        lower_pp=round(100 * low, 2),
    )
    return Check("not_applied", low > limit, figures)


def _added_p99(cfg: Guardrails, a: ArmCounts, b: ArmCounts, alpha: float) -> Check:
    figures: dict[str, Any] = {"limit_ms": cfg.added_p99_ms}
    na, nb = sum(a.latency.values()), sum(b.latency.values())
    base = p99_ms(b.latency)
    if min(na, nb) < cfg.min_requests or base is None:
        return Check("added_p99_ms", False, {**figures, "waiting": "min_requests"})
    threshold = base + (cfg.added_p99_ms or 0.0)
    # Only buckets wholly above the threshold count: the arm is given the benefit.
    slow = sum(c for k, c in a.latency.items() if edge_ms(k) >= threshold)
    share = slow / na
    low = share - _TAIL - _bound(_share_var(slow, na), na + nb, alpha, cfg.expected)
    figures.update(
        arm_p99_ms=round(p99_ms(a.latency) or 0.0, 3),
        default_p99_ms=round(base, 3),
        over_pct=round(100 * share, 2),
    )
    return Check("added_p99_ms", low > 0.0, figures)


def _ctr(cfg: Guardrails, a: ArmCounts, b: ArmCounts, alpha: float) -> Check:
    figures: dict[str, Any] = {"limit_pct": cfg.ctr, "units": a.units}
    ra, rb = a.ctr(), b.ctr()
    if ra is None or rb is None or min(ra.units, rb.units) < cfg.min_units:
        return Check("ctr", False, {**figures, "waiting": "min_units"})
    lift = relative_lift(ra, rb)
    figures.update(arm_ctr=round(ra.ratio, 5), default_ctr=round(rb.ratio, 5))
    if lift is None or lift[1] is None:
        return Check("ctr", False, {**figures, "waiting": "clicks on the default arm"})
    estimate, var = lift
    high = estimate + _bound(var, ra.units + rb.units, alpha, cfg.expected)
    figures.update(lift_pct=round(100 * estimate, 2), upper_pct=round(100 * high, 2))
    return Check("ctr", high < (cfg.ctr or 0.0) / 100.0, figures)


_TESTS = {"not_applied": _not_applied, "added_p99_ms": _added_p99, "ctr": _ctr}


def check_arm(cfg: Guardrails, arm: ArmCounts, default: ArmCounts) -> list[Check]:
    """Every guardrail of ``cfg`` read on the arm against the default arm."""
    limits = cfg.limits()
    alpha = cfg.alpha / len(limits)
    return [_TESTS[name](cfg, arm, default, alpha) for name in limits]
