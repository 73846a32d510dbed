"""proxy/readout/plan.py against the textbook two-proportion size and by hand."""

from __future__ import annotations

import math

import pytest

from proxy.readout.plan import INTERLEAVING_RATIO, plan
from proxy.readout.sequential import cs_halfwidth


def test_fixed_horizon_is_the_textbook_size() -> None:
    # n per arm = (z_.975 + z_.8)^2 (p1 q1 + p2 q2) / (p2 - p1)^2 with p1 = 0.12, p2 = 0.126:
    # (2.8015852)^2 * (0.1056 + 0.110124) / 0.006^2 = 47,033.1 -> 94,067 over both arms
    # (Evan Miller's calculator and G*Power give ~47,000 a group for these inputs).
    p = plan(0.12, 0.05)
    z = 1.959963984540054 + 0.8416212335729143
    per_arm = z * z * (0.12 * 0.88 + 0.126 * 0.874) / 0.006**2
    assert p.fixed_units == math.ceil(2 * per_arm) == 94_067
    assert p.interleaving_fixed == math.ceil(94_067 / INTERLEAVING_RATIO)


def test_always_valid_size_is_the_smallest_that_reaches_the_power() -> None:
    p = plan(0.12, 0.05)
    var = 2 * (0.12 * 0.88 + 0.126 * 0.874)  # N * Var(difference), half the units an arm

    def reaches(n: int) -> bool:
        return (
            cs_halfwidth(var / n, n, 0.05, n, 0.05) + 0.8416212335729143 * math.sqrt(var / n)
            <= 0.006
        )

    assert reaches(p.sequential_units) and not reaches(p.sequential_units - 1)
    assert 1.5 * p.fixed_units < p.sequential_units < 2.5 * p.fixed_units


def test_design_effect_and_share() -> None:
    assert plan(0.12, 0.05, design_effect=2).fixed_units == pytest.approx(2 * 94_067, abs=2)
    # A 10% arm needs more units in all than a 50/50 split.
    assert plan(0.12, 0.05, share=0.1).fixed_units > 2 * plan(0.12, 0.05).fixed_units


def test_refuses_what_cannot_be() -> None:
    for kwargs in (
        {"baseline": 0, "mde": 0.05},
        {"baseline": 0.5, "mde": 1.5},
        {"baseline": 0.5, "mde": 0.0},
        {"baseline": 0.1, "mde": 0.1, "share": 1},
    ):
        with pytest.raises(ValueError):
            plan(**kwargs)  # type: ignore[arg-type]
