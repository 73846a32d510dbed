"""The array after rules: pins keep their slots, drops go, an order replaces the sort."""

from __future__ import annotations

import numpy as np
import pytest

from plugins.arrange import arrange
from proxy.feed.ranking import reorder


@pytest.mark.parametrize("seed", range(20))
def test_arrange_without_rules_is_reorder(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    items = list(range(n))
    positions = np.flatnonzero(rng.random(n) < 0.7).astype(np.intp)
    # Ties on purpose: both must be stable in the same way.
    scores = rng.integers(0, 5, positions.size).astype(np.float32)
    unscored = np.ones(n, dtype=bool)
    unscored[positions] = False
    got = arrange(items, positions, scores, unscored, np.zeros(n, dtype=bool), None)
    assert got == reorder(items, positions, scores)


def test_arrange_order_pins_and_drops() -> None:
    items = list("abcdef")
    positions = np.arange(6, dtype=np.intp)
    scores = np.zeros(6, dtype=np.float32)
    fixed = np.zeros(6, dtype=bool)
    fixed[2] = True  # c stays at index 2
    dropped = np.zeros(6, dtype=bool)
    dropped[0] = True  # a goes
    order = np.array([5, 4, 3, 2, 1, 0], dtype=np.intp)  # f e d c b a
    assert arrange(items, positions, scores, fixed, dropped, order) == ["f", "e", "c", "d", "b"]


def test_arrange_pins_past_the_end_keep_their_relative_order() -> None:
    items = list("abcde")
    positions = np.arange(5, dtype=np.intp)
    scores = np.arange(5, dtype=np.float32)
    fixed = np.array([False, False, False, True, True])
    dropped = np.array([True, True, True, False, False])
    assert arrange(items, positions, scores, fixed, dropped, None) == ["d", "e"]
    dropped = np.array([True, True, False, False, False])
    assert arrange(items, positions, scores, fixed, dropped, None) == ["c", "d", "e"]
