"""Sample ratio mismatch: do the units on a route's percent arms match the split that
routes.yaml configures?

Only arms assigned by the sticky bucket alone take part: a *pure percent arm* (its
``when`` has ``percent`` and maybe ``salt``, nothing else) and the default arm. Header,
cookie and query arms are chosen by the client, so no split predicts their counts.

The expected share of pure percent arm i is the chance that the user's bucket under its
salt is below its percent while no earlier pure percent arm matched (the first match
wins). Arms with the same salt share one bucket, uniform in [0, 100); different salts
hash independently (see proxy/routing/arms.py). The default arm gets the rest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from proxy.config.routes import DEFAULT_ARM, Route, arm_name
from proxy.readout.stats import chi_square_gof
from proxy.routing.arms import default_salt

__all__ = [
    "ALARM_P",
    "WARNING_P",
    "PercentArm",
    "SrmResult",
    "expected_split",
    "percent_arms",
    "split_of",
    "srm_test",
]

WARNING_P = 0.01
ALARM_P = 0.001  # what GrowthBook and Statsig alarm at: a broken assignment, not bad luck
MIN_EXPECTED = 5  # below this many expected units in an arm the chi-square is rough


@dataclass(frozen=True)
class PercentArm:
    name: str
    percent: float
    salt: str


def percent_arms(route: Route) -> tuple[PercentArm, ...]:
    """The route's pure percent arms in the order they are tried, with their effective salt."""
    arms = []
    for index, exp in enumerate(route.experiments):
        when = exp.when
        if when.percent is None or when.header or when.cookie or when.query:
            continue
        name = arm_name(index, exp)
        salt = when.salt if when.salt is not None else default_salt(route.name, name)
        arms.append(PercentArm(name, float(when.percent), salt))
    return tuple(arms)


def split_of(arms: Sequence[PercentArm], default: str = DEFAULT_ARM) -> dict[str, float]:
    """Each arm's expected share of units (the default arm last); the shares sum to 1."""
    split: dict[str, float] = {}
    for i, arm in enumerate(arms):
        # P(this arm's bucket < p and every earlier arm missed). Per salt, the earlier
        # arms missed iff that salt's bucket is at or above their largest percent.
        floors: dict[str, float] = {}
        for earlier in arms[:i]:
            floors[earlier.salt] = max(floors.get(earlier.salt, 0.0), earlier.percent)
        share = max(0.0, arm.percent - floors.pop(arm.salt, 0.0)) / 100.0
        for floor in floors.values():
            share *= (100.0 - floor) / 100.0
        split[arm.name] = share
    split[default] = max(0.0, 1.0 - math.fsum(split.values()))
    return split


def expected_split(route: Route) -> dict[str, float]:
    """The shares routes.yaml configures for the route's pure percent arms and default."""
    return split_of(percent_arms(route))


@dataclass(frozen=True)
class SrmResult:
    """A chi-square test of observed units per arm against the configured split.

    ``p_value`` is None when there is no test (``note`` says why). ``expected`` holds
    expected unit counts (the observed total spread by ``split``)."""

    p_value: float | None
    statistic: float | None
    df: int | None
    split: dict[str, float]
    observed: dict[str, int]
    expected: dict[str, float]
    note: str | None = None
    warning: bool = field(init=False)
    alarm: bool = field(init=False)

    def __post_init__(self) -> None:
        p = self.p_value
        object.__setattr__(self, "warning", p is not None and p < WARNING_P)
        object.__setattr__(self, "alarm", p is not None and p < ALARM_P)


def srm_test(observed: Mapping[str, int], split: Mapping[str, float]) -> SrmResult:
    """Test unit counts per arm (arms missing from ``observed`` count 0) against a split
    from :func:`expected_split`. Counts of arms outside the split are ignored."""
    arms = list(split)
    counts = {arm: int(observed.get(arm, 0)) for arm in arms}
    total = sum(counts.values())
    expected = {arm: total * split[arm] for arm in arms}
    common = {"split": dict(split), "observed": counts, "expected": expected}
    if sum(1 for arm in arms if split[arm] > 0) < 2:
        note = "fewer than two arms assigned by percent alone: no split to test"
        return SrmResult(None, None, None, note=note, **common)
    if total == 0:
        return SrmResult(None, None, None, note="no units on the percent arms", **common)
    result = chi_square_gof([counts[a] for a in arms], [split[a] for a in arms])
    if result is None:
        return SrmResult(None, None, None, note="nothing to test", **common)
    stat, df, p = result
    note = None
    if any(0 < e < MIN_EXPECTED for e in expected.values()):
        note = f"fewer than {MIN_EXPECTED} units expected in an arm: the test is rough"
    return SrmResult(p, stat, df, note=note, **common)
