"""Putting scored items in order without rules: reorder, a stable sort that keeps
unscored items in their slots."""

from __future__ import annotations

import numpy as np
import pytest

from proxy.feed.ranking import reorder


def test_reorder_keeps_unscored_slots() -> None:
    items = ["a", "b", "c", "d", "e"]
    positions = np.array([0, 2, 3], dtype=np.intp)
    scores = np.array([0.1, 0.9, 0.5], dtype=np.float32)
    assert reorder(items, positions, scores) == ["c", "b", "d", "a", "e"]


@pytest.mark.parametrize("seed", range(10))
def test_reorder_all_scored_is_a_stable_descending_sort(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    items = [{"id": str(k)} for k in range(n)]
    scores = rng.integers(0, 4, n).astype(np.float32)  # ties on purpose
    expected = [items[k] for k in sorted(range(n), key=lambda k: -scores[k])]
    got = reorder(items, np.arange(n, dtype=np.intp), scores)
    assert got == expected and all(a is b for a, b in zip(got, expected, strict=True))
