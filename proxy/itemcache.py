"""In-process LRU cache with a TTL for item vectors (shared by all users)."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

# Marks an id known to have no (valid) vector, so it costs no Redis round trip.
MISSING = b""


class ItemCache:
    def __init__(
        self, max_items: int, ttl_s: float, missing_ttl_s: float, max_lists: int = 0
    ) -> None:
        self.max_items = max_items
        self.ttl_s = ttl_s
        self.missing_ttl_s = missing_ttl_s
        self.max_lists = max_lists
        self._data: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        # Whole id lists (a feed page) -> their assembled vectors.
        self._lists: OrderedDict[tuple[str, ...], tuple[Any, float]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

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
        if self.max_items == 0:
            return
        now = time.monotonic()
        data = self._data
        for key, vec in items:
            ttl = self.missing_ttl_s if vec is MISSING or not vec else self.ttl_s
            data[key] = (vec, now + ttl)
            data.move_to_end(key)
        while len(data) > self.max_items:
            data.popitem(last=False)

    def get_batch(self, key: tuple[str, ...]) -> Any | None:
        entry = self._lists.get(key)
        if entry is None or entry[1] <= time.monotonic():
            return None
        self._lists.move_to_end(key)
        self.hits += len(key)
        return entry[0]

    def put_batch(self, key: tuple[str, ...], value: Any, complete: bool) -> None:
        """Cache an assembled list; one with absent items lives only as long as those."""
        if self.max_lists == 0 or self.max_items == 0:
            return
        ttl = self.ttl_s if complete else min(self.ttl_s, self.missing_ttl_s)
        if ttl <= 0:
            return
        self._lists[key] = (value, time.monotonic() + ttl)
        self._lists.move_to_end(key)
        while len(self._lists) > self.max_lists:
            self._lists.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()
        self._lists.clear()
