"""In-process LRU caches with a TTL for item vectors (shared by all users), bounded in
count and in bytes.

Two caches share one byte budget (``max_bytes``): single item vectors, and whole id
lists (a feed page) with their assembled vectors. Lists are derived data, so they give
way first: filling the item cache evicts lists before items, and a list never holds
more vectors in total than ``max_items`` allows items (an operator who sets
``max_items: 1000`` gets about a thousand vectors' worth of memory, whatever the size
of the feeds).

Item vectors live in one float32 slab, a row each, with an expiry and an "absent" flag
per row: an id maps to its row in an OrderedDict (the LRU order), so a feed's matrix is
one gather (``slab[rows]``) and a cached vector costs its 4 x dim bytes plus one dict
entry, not a bytes object, a tuple and a float besides. The slab grows geometrically up
to what ``max_items`` and ``max_bytes`` allow and never shrinks (freed rows are reused);
its whole capacity counts in the estimate. Sizes are estimated from the objects' lengths
with the per-entry overhead measured on CPython 3.11, rounded up: tests/unit/store/test_itemcache.py
checks the estimate against tracemalloc.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from itertools import compress, repeat
from typing import Any

import numpy as np

# Marks an id known to have no (valid) vector, so it costs no Redis round trip.
MISSING = b""
# The row get_many gives an id without a vector (known absent, or a miss).
NO_ROW = -1
F32 = np.dtype("<f4")

# Bytes per item entry besides the key's characters: the OrderedDict slot and node, the
# row's int and the str header (~147 measured with tracemalloc; dicts over-allocate).
ENTRY_OVERHEAD = 192
# Per slab row besides the vector: its expiry (float64) and absent flag (bool).
ROW_OVERHEAD = 8 + 1
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
# The slab's first allocation, in rows (it then grows by half again each time).
FIRST_ROWS = 256


def entry_size(key: str) -> int:
    """Bytes an item's index entry holds (its row in the slab is counted apart)."""
    return ENTRY_OVERHEAD + (len(key) if key.isascii() else 4 * len(key))


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
        dim: int | None = None,
    ) -> None:
        self.max_items = max_items
        self.ttl_s = ttl_s
        self.missing_ttl_s = missing_ttl_s
        self.max_lists = max_lists
        self.max_bytes = max_bytes
        self.dim = dim  # None: taken from the first vector put
        self._index: OrderedDict[str, int] = OrderedDict()  # id -> row, LRU first
        self._free: list[int] = []  # rows given back by evictions
        self._used = 0  # rows ever handed out (the rest of the capacity is untouched)
        self._alloc(0)
        # Whole id lists (a feed page) -> (their assembled vectors, expiry, size).
        self._lists: OrderedDict[tuple[str, ...], tuple[Any, float, int]] = OrderedDict()
        self.entry_bytes = 0  # the index entries; the slab is slab_bytes
        self.list_bytes = 0
        self.list_items = 0  # ids held by all cached lists together
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._index)

    @property
    def row_bytes(self) -> int:
        return 4 * (self.dim or 0) + ROW_OVERHEAD

    @property
    def slab_bytes(self) -> int:
        return len(self._expires) * self.row_bytes

    @property
    def item_bytes(self) -> int:
        return self.entry_bytes + self.slab_bytes

    @property
    def nbytes(self) -> int:
        """Estimated bytes held by both caches (never above max_bytes)."""
        return self.item_bytes + self.list_bytes

    @property
    def lists(self) -> int:
        return len(self._lists)

    def get_many(self, ids: list[str]) -> tuple[np.ndarray, list[int]]:
        """The slab row of each id's vector (NO_ROW for an id known to have none, and
        for a miss) and the positions that missed. Gather the rows (``vectors``) before
        anything else runs: a later put may reuse them."""
        index = self._index
        if not index or not ids:
            self.misses += len(ids)
            return np.full(len(ids), NO_ROW, dtype=np.intp), list(range(len(ids)))
        rows = np.fromiter(map(index.get, ids, repeat(NO_ROW)), np.intp, len(ids))
        # NO_ROW reads the last row's expiry and flag: masked out, or set to NO_ROW again.
        live = self._expires[rows] > time.monotonic()
        live &= rows != NO_ROW
        if live.all():  # the usual case, ~4 us less for 100 ids
            deque(map(index.move_to_end, ids), maxlen=0)
            missed: list[int] = []
        else:
            deque(map(index.move_to_end, compress(ids, live.tolist())), maxlen=0)
            rows[~live] = NO_ROW
            missed = np.flatnonzero(~live).tolist()
        absent = self._absent[rows]
        if absent.any():
            rows[absent] = NO_ROW
        self.hits += len(ids) - len(missed)
        self.misses += len(missed)
        return rows, missed

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of these rows as a new [len(rows), dim] matrix: one gather."""
        return self._slab[rows]

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        """Cache (id, vector bytes) pairs; MISSING (or empty) marks an id without one."""
        present = [bool(vec) for _, vec in items]
        vecs = [vec for _, vec in items if vec]
        width = len(vecs[0]) // 4 if vecs else self.dim or 0
        if any(len(vec) != 4 * width for vec in vecs):
            raise ValueError(f"vectors of other lengths than {width} float32 values")
        matrix = np.frombuffer(b"".join(vecs), dtype=F32).reshape(len(vecs), width)
        self.put_vectors([key for key, _ in items], present, matrix)

    def put_vectors(self, keys: list[str], present: list[bool], matrix: np.ndarray) -> None:
        """Cache these ids: ``matrix`` holds, in order, the vectors of those whose
        ``present`` is true; the others are known to have none (MISSING)."""
        if self.max_items == 0 or self.max_bytes == 0 or not keys:
            return
        if len(matrix):
            self._set_dim(matrix.shape[1])
        if self._limit() == 0:
            return
        rows = [self._row_for(key) for key in keys]
        at = np.asarray(rows, dtype=np.intp)
        flags = np.asarray(present, dtype=bool)
        if len(set(rows)) < len(rows):
            # A batch larger than the slab reused its own rows (or named an id twice):
            # keep the last write of each row, as numpy leaves repeated writes unordered.
            keep = np.asarray(sorted({row: j for j, row in enumerate(rows)}.values()))
            matrix = matrix[(np.cumsum(flags) - 1)[keep][flags[keep]]]
            at, flags = at[keep], flags[keep]
        now = time.monotonic()
        self._slab[at[flags]] = matrix
        self._absent[at] = ~flags
        self._expires[at] = np.where(flags, now + self.ttl_s, now + self.missing_ttl_s)
        while self.nbytes > self.max_bytes:
            if self._lists:
                self._evict_list()
            elif self._index:
                self._evict_item()
            else:  # pragma: no cover - the slab alone always fits (_limit)
                break

    def _row_for(self, key: str) -> int:
        index = self._index
        row = index.get(key)
        if row is not None:
            index.move_to_end(key)
            return row
        if self._free:
            row = self._free.pop()
        else:
            if self._used == len(self._expires):
                self._grow()
            if self._used < len(self._expires):
                row = self._used
                self._used += 1
            else:  # full: the least recently used item gives its row
                old, row = index.popitem(last=False)
                self.entry_bytes -= entry_size(old)
        index[key] = row
        self.entry_bytes += entry_size(key)
        return row

    def _limit(self) -> int:
        """Rows the slab may have: max_items, and no more than max_bytes holds with an
        entry each (so evicting every entry always brings nbytes under the bound)."""
        return min(self.max_items, self.max_bytes // (self.row_bytes + ENTRY_OVERHEAD))

    def _grow(self) -> None:
        rows = len(self._expires)
        target = min(self._limit(), max(FIRST_ROWS, rows + rows // 2))
        if target > rows:
            self._alloc(target)

    def _alloc(self, rows: int) -> None:
        """A slab of ``rows`` rows keeping the rows in use (np.empty: pages are only
        touched, and count in RSS, as rows are written)."""
        used = self._used
        slab = np.empty((rows, self.dim or 0), dtype=F32)
        expires = np.zeros(rows, dtype=np.float64)
        absent = np.ones(rows, dtype=bool)
        if used:
            slab[:used] = self._slab[:used]
            expires[:used] = self._expires[:used]
            absent[:used] = self._absent[:used]
        self._slab, self._expires, self._absent = slab, expires, absent

    def _set_dim(self, dim: int) -> None:
        if self.dim == dim:
            return
        if self.dim is not None:
            raise ValueError(f"vectors of {dim} values in a cache of {self.dim}")
        # Only absent markers can be cached before the first vector: start over if the
        # wider rows no longer fit.
        self.dim = dim
        if len(self._expires) > self._limit():
            self._clear_items()
        self._alloc(len(self._expires))

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
        key, row = self._index.popitem(last=False)
        self.entry_bytes -= entry_size(key)
        self._free.append(row)

    def _evict_list(self) -> None:
        key, (_, _, size) = self._lists.popitem(last=False)
        self.list_bytes -= size
        self.list_items -= len(key)

    def _clear_items(self) -> None:
        self._index.clear()
        self._free.clear()
        self._used = 0
        self.entry_bytes = 0
        self._alloc(0)

    def clear(self) -> None:
        self._clear_items()
        self._lists.clear()
        self.list_bytes = self.list_items = 0
