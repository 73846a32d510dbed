"""The in-process item vector cache: hits and misses counted, LRU order, TTLs (shorter
for ids known to have no vector), and whole-list entries."""

from __future__ import annotations

import time

import pytest

from proxy.itemcache import MISSING, ItemCache


def test_hits_misses_and_positions() -> None:
    cache = ItemCache(max_items=10, ttl_s=60, missing_ttl_s=60)
    cache.put_many([("a", b"va"), ("c", MISSING)])
    found, missed = cache.get_many(["a", "b", "c"])
    assert found == [b"va", None, MISSING] and missed == [1]
    assert (cache.hits, cache.misses) == (2, 1)


def test_least_recently_used_goes_first() -> None:
    cache = ItemCache(max_items=2, ttl_s=60, missing_ttl_s=60)
    cache.put_many([("a", b"1"), ("b", b"2")])
    cache.get_many(["a"])  # a is now the most recent
    cache.put_many([("c", b"3")])
    assert len(cache) == 2
    assert cache.get_many(["a", "b", "c"])[1] == [1]  # b went


def test_missing_ids_expire_sooner(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    cache = ItemCache(max_items=10, ttl_s=60, missing_ttl_s=5)
    cache.put_many([("v", b"vec"), ("gone", MISSING)])
    now[0] += 6
    assert cache.get_many(["v", "gone"])[1] == [1]
    now[0] += 60
    assert cache.get_many(["v"])[1] == [0]


def test_lists_live_only_as_long_as_their_missing_items(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    cache = ItemCache(max_items=10, ttl_s=60, missing_ttl_s=5, max_lists=2)
    cache.put_batch(("a", "b"), "complete", complete=True)
    cache.put_batch(("a", "x"), "partial", complete=False)
    assert cache.get_batch(("a", "b")) == "complete" and cache.get_batch(("a", "x")) == "partial"
    assert cache.hits == 4  # a list hit counts every id in it
    now[0] += 6
    assert cache.get_batch(("a", "x")) is None and cache.get_batch(("a", "b")) == "complete"
    cache.put_batch(("c",), 1, complete=True)
    cache.put_batch(("d",), 2, complete=True)
    assert cache.get_batch(("a", "b")) is None  # max_lists: the oldest list went


def test_zero_sizes_cache_nothing() -> None:
    cache = ItemCache(max_items=0, ttl_s=60, missing_ttl_s=5, max_lists=10)
    cache.put_many([("a", b"1")])
    cache.put_batch(("a",), "x", complete=True)
    assert len(cache) == 0 and cache.get_batch(("a",)) is None
