"""Finding the items in a decoded feed, and putting them in score order.

Only the order of the item array changes; every item object is the one that was parsed.
"""

from __future__ import annotations

from itertools import repeat
from typing import Any

import numpy as np


class ItemsNotFound(Exception):
    pass


def dig(doc: Any, path: tuple[str, ...]) -> Any:
    """Follow a dotted path through objects (and arrays, by index)."""
    node = doc
    for part in path:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise ItemsNotFound(".".join(path))
    return node


def item_ids(items: list[Any], id_path: tuple[str, ...]) -> list[str | None]:
    """Each item's id as a string (strings and integers), None where it has none."""
    if len(id_path) == 1:
        key = id_path[0]
        try:
            values = list(map(dict.get, items, repeat(key)))  # C speed; 1.6x the loop
        except TypeError:  # an item that is not an object
            values = [item.get(key) if type(item) is dict else None for item in items]
        if set(map(type, values)) == {str}:
            return values  # the common case: string ids, no per-item conversion
    else:
        values = []
        for item in items:
            try:
                values.append(dig(item, id_path))
            except ItemsNotFound:
                values.append(None)
    out: list[str | None] = []
    for value in values:
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            out.append(str(value))
        else:
            out.append(None)
    return out


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


def arrange(
    items: list[Any],
    positions: np.ndarray,
    scores: np.ndarray,
    fixed: np.ndarray,
    dropped: np.ndarray,
    order: np.ndarray | None,
) -> list[Any]:
    """The response's array after rules: ``reorder`` generalized.

    Dropped items go. Fixed items (unscored, or pinned) keep their index; if drops made
    the array too short for that, they keep their relative order at its end. The other
    scored items fill the free slots in ``order`` (indices into ``positions``), or by
    descending score (stable) when it is None. With nothing fixed beyond the unscored
    items and nothing dropped, the result is exactly ``reorder``'s.
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
    return [items[i] for i in source.tolist()]
