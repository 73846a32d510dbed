"""Finding items and putting them in order: dig/item_ids, reorder, and arrange."""

from __future__ import annotations

import numpy as np
import pytest

from proxy.ranking import ItemsNotFound, arrange, dig, item_ids, reorder


def test_dig() -> None:
    doc = {"data": {"children": [{"x": 1}, {"x": 2}]}}
    assert dig(doc, ("data", "children", "1", "x")) == 2
    with pytest.raises(ItemsNotFound):
        dig(doc, ("data", "nope"))


def test_item_ids_strings_and_integers_only() -> None:
    items = [{"id": "a"}, {"id": 7}, {"id": True}, {"id": 1.5}, {}, "x", {"id": None}]
    assert item_ids(items, ("id",)) == ["a", "7", None, None, None, None, None]
    assert item_ids([{"d": {"id": 3}}, {"d": 1}], ("d", "id")) == ["3", None]


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
