"""In-process LRU caches with a TTL for item vectors (shared by all users), bounded in
count and in bytes.

Two caches share one byte budget (``max_bytes``): single item vectors, and whole id
lists (a feed page) with their assembled vectors. Lists are derived data, so they give
way first: filling the item cache evicts lists before items, and a list never holds
more vectors in total than ``max_items`` allows items (an operator who sets
``max_items: 1000`` gets about a thousand vectors' worth of memory, whatever the size
of the feeds). Sizes are estimated from the objects' lengths with the per-entry
overhead measured on CPython 3.11 (an OrderedDict slot, its tuple, the key and value
objects), rounded up: tests/test_itemcache.py checks the estimate against tracemalloc.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import numpy as np

# Marks an id known to have no (valid) vector, so it costs no Redis round trip.
MISSING = b""

# Bytes per item entry besides the key's and the vector's characters: the OrderedDict
# slot and node, the (vector, expiry) tuple, the float, and the str and bytes headers
# (171 + 49 + 33 measured with tracemalloc; rounded up).
ITEM_OVERHEAD = 272
# Bytes per list entry besides its parts: the OrderedDict slot, the entry tuple, the
# (positions, matrix) tuple and both ndarray headers.
LIST_OVERHEAD = 640
# Per id in a list key: the tuple's pointer and a str header (49 for ASCII, 80 covers
# the wider kinds, whose characters count 4 bytes each below).
ID_OVERHEAD_ASCII = 8 + 49
ID_OVERHEAD_WIDE = 8 + 80
# A single list may use at most this share of max_bytes: one huge feed must not
# flush every other cached page.
LIST_SHARE = 4


def item_size(key: str, vec: bytes) -> int:
    chars = len(key) if key.isascii() else 4 * len(key)
    return ITEM_OVERHEAD + chars + len(vec)


def list_size(key: tuple[str, ...], value: Any) -> int:
    """Bytes a cached list holds: its id tuple, the ids, and the arrays' data."""
    joined = "".join(key)  # one pass in C; str.isascii() is O(1) on the result
    if joined.isascii():
        ids = ID_OVERHEAD_ASCII * len(key) + len(joined)
    else:
        ids = ID_OVERHEAD_WIDE * len(key) + 4 * len(joined)
    arrays = sum(part.nbytes for part in value if isinstance(part, np.ndarray))
    return LIST_OVERHEAD + ids + arrays


class ItemCache:
    def __init__(
        self,
        max_items: int,
        ttl_s: float,
        missing_ttl_s: float,
        max_lists: int = 0,
        max_bytes: int = 128 * 1024 * 1024,
    ) -> None:
        self.max_items = max_items
        self.ttl_s = ttl_s
        self.missing_ttl_s = missing_ttl_s
        self.max_lists = max_lists
        self.max_bytes = max_bytes
        self._data: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        # Whole id lists (a feed page) -> (their assembled vectors, expiry, size).
        self._lists: OrderedDict[tuple[str, ...], tuple[Any, float, int]] = OrderedDict()
        self.item_bytes = 0
        self.list_bytes = 0
        self.list_items = 0  # ids held by all cached lists together
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    @property
    def nbytes(self) -> int:
        """Estimated bytes held by both caches (never above max_bytes)."""
        return self.item_bytes + self.list_bytes

    @property
    def lists(self) -> int:
        return len(self._lists)

    def get_many(self, ids: list[str]) -> tuple[list[bytes | None], list[int]]:
        """Cached vectors (MISSING for known-absent) and the positions that missed."""
        now = time.monotonic()
        data = self._data
        found: list[bytes | None] = []
        missed: list[int] = []
        for pos, key in enumerate(ids):
            entry = data.get(key)
            if entry is not None and entry[1] > now:
                data.move_to_end(key)
                found.append(entry[0])
            else:
                found.append(None)
                missed.append(pos)
        self.hits += len(ids) - len(missed)
        self.misses += len(missed)
        return found, missed

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        if self.max_items == 0 or self.max_bytes == 0:
            return
        now = time.monotonic()
        data = self._data
        added = 0
        for key, vec in items:
            ttl = self.missing_ttl_s if vec is MISSING or not vec else self.ttl_s
            old = data.get(key)
            if old is not None:
                added -= item_size(key, old[0])
            data[key] = (vec, now + ttl)
            data.move_to_end(key)
            added += item_size(key, vec)
        self.item_bytes += added
        while len(data) > self.max_items:
            self._evict_item()
        while self.nbytes > self.max_bytes:
            if self._lists:
                self._evict_list()
            elif data:
                self._evict_item()
            else:  # pragma: no cover - nbytes is 0 when both are empty
                break

    def get_batch(self, key: tuple[str, ...]) -> Any | None:
        entry = self._lists.get(key)
        if entry is None or entry[1] <= time.monotonic():
            return None
        self._lists.move_to_end(key)
        self.hits += len(key)
        return entry[0]

    def put_batch(self, key: tuple[str, ...], value: Any, complete: bool) -> None:
        """Cache an assembled list; one with absent items lives only as long as those.

        A list that cannot fit (over max_items vectors, or over its share of max_bytes
        next to the items) is not kept: lists give way to items, never the reverse.
        """
        if self.max_lists == 0 or self.max_items == 0 or len(key) > self.max_items:
            return
        ttl = self.ttl_s if complete else min(self.ttl_s, self.missing_ttl_s)
        if ttl <= 0:
            return
        size = list_size(key, value)
        if size > self.max_bytes // LIST_SHARE or size > self.max_bytes - self.item_bytes:
            return
        lists = self._lists
        old = lists.pop(key, None)
        if old is not None:
            self.list_bytes -= old[2]
            self.list_items -= len(key)
        lists[key] = (value, time.monotonic() + ttl, size)
        self.list_bytes += size
        self.list_items += len(key)
        while (
            len(lists) > self.max_lists
            or self.list_items > self.max_items
            or self.nbytes > self.max_bytes
        ):
            self._evict_list()

    def _evict_item(self) -> None:
        key, (vec, _) = self._data.popitem(last=False)
        self.item_bytes -= item_size(key, vec)

    def _evict_list(self) -> None:
        key, (_, _, size) = self._lists.popitem(last=False)
        self.list_bytes -= size
        self.list_items -= len(key)

    def clear(self) -> None:
        self._data.clear()
        self._lists.clear()
        self.item_bytes = self.list_bytes = self.list_items = 0
