"""Unit tests for proxy/experiments/shadow.py: the agreement between a served and a shadow order
(Kendall tau, top-10 overlap) and the histograms they go to. The shadow's run on live
traffic is in tests/e2e/test_shadow_interleave_e2e.py."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from proxy.experiments.shadow import (
    OVERLAP_BUCKETS,
    TAU_BUCKETS,
    ShadowStats,
    agreement,
    kendall_tau,
)


def tau_by_pairs(ranks: list[int]) -> float:
    """The textbook definition, pair by pair."""
    pairs = list(itertools.combinations(range(len(ranks)), 2))
    same = sum(ranks[i] < ranks[j] for i, j in pairs)
    return (same - (len(pairs) - same)) / len(pairs)


def test_tau_of_the_same_and_the_reversed_order() -> None:
    assert kendall_tau(np.arange(50)) == 1.0
    assert kendall_tau(np.arange(50)[::-1].copy()) == -1.0
    assert kendall_tau(np.array([3])) is None
    assert kendall_tau(np.array([], dtype=np.int64)) is None


@pytest.mark.parametrize("n", [2, 3, 17, 100, 200])
def test_tau_agrees_with_the_pairs(n: int) -> None:
    rng = random.Random(n)
    for _ in range(5):
        ranks = rng.sample(range(3 * n), n)  # distinct places, not always 0..n-1
        assert kendall_tau(np.array(ranks)) == pytest.approx(tau_by_pairs(ranks))


def test_agreement_over_the_items_both_hold() -> None:
    served = [f"i{k}" for k in range(20)]
    assert agreement(served, served) == (1.0, 1.0)
    assert agreement(served, served[::-1]) == (-1.0, 0.0)
    # The shadow swaps the first two and drops i2: tau over the other 19 items.
    shadow = ["i1", "i0", *served[3:]]
    tau, overlap = agreement(served, shadow)
    assert tau == pytest.approx(tau_by_pairs([1, 0, *range(2, 19)]))
    assert overlap == 0.9  # i2 is not in the shadow's top 10, i10 is


def test_stats_count_each_value_in_its_bucket() -> None:
    stats = ShadowStats()
    stats.observe("feed", "v2", 0.3, 0.55)
    stats.observe("feed", "v2", 1.0, None)
    tau = stats.tau[("feed", "v2")]
    assert tau[TAU_BUCKETS.index(0.5)] == 1 and tau[TAU_BUCKETS.index(1.0)] == 1
    assert tau[-1] == pytest.approx(1.3)  # the sum
    overlap = stats.overlap[("feed", "v2")]
    assert overlap[OVERLAP_BUCKETS.index(0.6)] == 1 and overlap[-1] == pytest.approx(0.55)
    stats.count("feed", "v2", "run")
    stats.count("feed", "v2", "run")
    assert stats.results[("feed", "v2", "run")] == 2
