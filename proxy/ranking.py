"""Putting a feed's scored items in score order (the route has no rules plugins).

Only the order of the item array changes; every item object is the one that was parsed.
With rules, ``plugins.arrange.arrange`` builds the array instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def reorder(items: list[Any], positions: np.ndarray, scores: np.ndarray) -> list[Any]:
    """Stable sort of the scored items (at ``positions``) by descending score; they fill
    the slots scored items had, and items without a score keep their own slots."""
    order = np.argsort(-scores, kind="stable")
    if len(positions) == len(items):
        # All scored (the common case): positions is 0..n-1.
        return [items[i] for i in order.tolist()]
    out = list(items)
    for slot, src in zip(positions.tolist(), positions[order].tolist(), strict=True):
        out[slot] = items[src]
    return out
