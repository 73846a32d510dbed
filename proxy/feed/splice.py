"""A body read by its route's plan (``proxy.routing.reads``): items found without parsing the
document, and the response made by splicing the items' own bytes back in their new order.

Everything but the item array's contents is served as the origin sent it, and so is each
item; only the separators between items are rewritten (``,``). Numbers are never
re-serialized, so an integer beyond 64 bits is served exactly (the full parse has to skip
such a body, ``unsafe-number``). A body the plan cannot take (msgspec refuses it, an item is
not an object, the array is missing or empty) gives None, and the full parse runs as
before, with the outcome it always had.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
from msgspec import Raw

from plugins.builtin.dotted import item_ids
from plugins.context import ItemArray
from proxy.routing.reads import BodyPlan


@dataclass(slots=True)
class Spliced:
    """The body, the bounds of its items (first to last, inside the brackets), and each
    item's bytes in origin order."""

    raw: bytes
    start: int
    end: int
    parts: list[Raw]
    array: ItemArray  # the items as the rules see them: dicts of the keys they read

    def join(self, source: list[int]) -> bytes:
        parts = self.parts
        raw = self.raw
        inner = b",".join([parts[i] for i in source])
        return b"".join((raw[: self.start], inner, raw[self.end :]))


def _address(buffer: Any) -> int:
    return int(np.frombuffer(buffer, dtype=np.uint8).ctypes.data)


def locate(raw: bytes, plan: BodyPlan) -> tuple[list[Raw], int, int] | None:
    """Each item's bytes and the items' bounds in ``raw``; None: not a body for the plan."""
    try:
        found = plan.envelope.decode(raw)
        for key in plan.path:
            found = found[key]
    except (msgspec.DecodeError, KeyError):
        return None
    parts: list[Raw] = found
    if not parts:
        return None
    base = _address(raw)
    start = _address(parts[0]) - base
    end = _address(parts[-1]) + len(parts[-1]) - base
    # Raw is a view of the body; a copy would not be, and is not spliced.
    if not (0 <= start < end <= len(raw)):
        return None
    return parts, start, end


def find(raw: bytes, plan: BodyPlan) -> Spliced | None:
    """The body's items by the plan; None when the full parse must run instead. A body
    the route has read before (the same bytes) is not read again: its Spliced is shared,
    read-only (nothing writes into items on a route with a memo: no rules plugins)."""
    memo = plan.memo
    if memo is None:
        return scan(raw, plan)
    spliced: Spliced | None = memo.get(raw)
    if spliced is None:
        spliced = scan(raw, plan)
        if spliced is not None:
            memo.put(raw, spliced)
    return spliced


def scan(raw: bytes, plan: BodyPlan) -> Spliced | None:
    """``find`` without the memo: the body scanned."""
    located = locate(raw, plan)
    if located is None:
        return None
    parts, start, end = located
    try:
        # One more scan, of the items alone, for the keys the route reads.
        items = plan.items.decode(b"".join((b"[", raw[start:end], b"]")))
    except msgspec.DecodeError:
        return None
    return Spliced(raw, start, end, parts, ItemArray(items, item_ids(items, plan.id_path)))
