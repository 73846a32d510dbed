"""The response's array after the rules: built from what they left in the context."""

from __future__ import annotations

from typing import Any

import numpy as np


def arrange(
    items: list[Any],
    positions: np.ndarray,
    scores: np.ndarray,
    fixed: np.ndarray,
    dropped: np.ndarray,
    order: np.ndarray | None,
) -> list[Any]:
    """The array after rules (see ``arrangement``)."""
    source = arrangement(positions, scores, fixed, dropped, order)
    return [items[i] for i in source.tolist()]


def arrangement(
    positions: np.ndarray,
    scores: np.ndarray,
    fixed: np.ndarray,
    dropped: np.ndarray,
    order: np.ndarray | None,
) -> np.ndarray:
    """For each slot of the array after rules, the index of the item served there: a
    stable sort by score, generalized.

    Dropped items go. Fixed items (unscored, or pinned) keep their index; if drops made
    the array too short for that, they keep their relative order at its end. The other
    scored items fill the free slots in ``order`` (indices into ``positions``), or by
    descending score (stable) when it is None. With nothing fixed beyond the unscored
    items and nothing dropped, the result is exactly ``proxy.feed.ranking.reorder``'s.
    """
    keep = ~dropped
    pinned = np.flatnonzero(fixed & keep)
    length = int(keep.sum())
    if order is None:
        order = np.argsort(-scores, kind="stable")
    movable = ~(fixed[positions] | dropped[positions])
    ranked = positions[order[movable[order]]]
    # Strictly increasing and < length: min of two strictly increasing sequences.
    slots = np.minimum(pinned, length - pinned.size + np.arange(pinned.size))
    source = np.empty(length, dtype=np.intp)
    source[slots] = pinned
    free = np.ones(length, dtype=bool)
    free[slots] = False
    source[free] = ranked
    return source
