"""Putting a feed's scored items in score order (the route has no rules plugins).

Only the order of the item array changes; every item object is the one that was parsed.
With rules, ``plugins.arrange.arrange`` builds the array instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def served_order(n: int, positions: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """For each of the n slots, the index of the item served there: a stable sort of the
    scored items (at ``positions``) by descending score fills the slots scored items had,
    and items without a score keep their own slots."""
    order = np.argsort(-scores, kind="stable")
    if len(positions) == n:
        return order  # all scored (the common case): positions is 0..n-1
    source = np.arange(n, dtype=np.intp)
    source[positions] = positions[order]
    return source


def reorder(items: list[Any], positions: np.ndarray, scores: np.ndarray) -> list[Any]:
    """The items in served order (see ``served_order``)."""
    return [items[i] for i in served_order(len(items), positions, scores).tolist()]
