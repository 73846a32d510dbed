"""The routes versions and fleet reports in Redis (proxy/routing/versions.py), on a real Valkey
and on a real cluster."""

from __future__ import annotations

import hashlib
import time

import orjson
import pytest
import redis

from proxy.config.settings import RoutesRedis
from proxy.routing import versions
from proxy.routing.versions import Head
from tests.conftest import ROUTES_KEY
from tests.support.clusters import ValkeyCluster

pytestmark = pytest.mark.usefixtures("routes_key")

CFG = RoutesRedis(fleet_ttl_s=2.0, poll_s=0.5)


def test_push_numbers_versions_and_skips_the_same_bytes(redis_db: redis.Redis) -> None:
    with redis_db.pubsub() as sub:
        sub.subscribe(CFG.channel)
        sub.get_message(timeout=1)  # the subscribe confirmation
        one, changed = versions.push(redis_db, CFG, b"routes: []\n", ROUTES_KEY)
        assert changed and one == Head(1, hashlib.sha256(b"routes: []\n").hexdigest())
        message = sub.get_message(timeout=1)
        assert message is not None and message["data"] == f"1 {one.sha256}".encode()

        again, changed = versions.push(redis_db, CFG, b"routes: []\n", ROUTES_KEY)
        assert (again, changed) == (one, False)
        assert sub.get_message(timeout=0.2) is None  # nothing new: nothing published

        forced, changed = versions.push(redis_db, CFG, b"routes: []\n", ROUTES_KEY, force=True)
        assert changed and forced == Head(2, one.sha256)
        two, _ = versions.push(redis_db, CFG, b"models: {}\n", ROUTES_KEY)
        assert two.version == 3

    stored = versions.fetch(redis_db, CFG)
    assert stored is not None and stored.raw == b"models: {}\n" and stored.intact
    assert stored.head == versions.head(redis_db, CFG) == two
    assert "@" in stored.pushed_by and abs(stored.pushed_at - time.time()) < 60


def test_nothing_stored(redis_db: redis.Redis) -> None:
    assert versions.head(redis_db, CFG) is None
    assert versions.fetch(redis_db, CFG) is None
    assert versions.fleet(redis_db, CFG) == []


def test_tampered_bytes_are_not_intact(redis_db: redis.Redis) -> None:
    versions.push(redis_db, CFG, b"routes: []\n", ROUTES_KEY)
    redis_db.hset(CFG.key, "yaml", b"routes: [] # edited by hand\n")
    stored = versions.fetch(redis_db, CFG)
    assert stored is not None and not stored.intact


def test_fleet_lists_live_processes_and_drops_the_silent(redis_db: redis.Redis) -> None:
    versions.report(redis_db, CFG, "a:1", {"version": 3})
    versions.report(redis_db, CFG, "b:2", {"version": 2})
    redis_db.hset(CFG.fleet_key, "gone:3", orjson.dumps({"version": 1, "at": time.time() - 60}))
    redis_db.hset(CFG.fleet_key, "junk:4", b"not json")
    fleet = versions.fleet(redis_db, CFG)
    assert [(e["process"], e["version"]) for e in fleet] == [("a:1", 3), ("b:2", 2)]
    assert all(0 <= e["age_s"] < 5 for e in fleet)
    assert set(redis_db.hkeys(CFG.fleet_key)) == {b"a:1", b"b:2"}  # pruned on the way
    assert 0 < redis_db.ttl(CFG.fleet_key) <= 2  # the hash outlives the fleet briefly
    versions.forget(redis_db, CFG, "a:1")
    assert [e["process"] for e in versions.fleet(redis_db, CFG)] == ["b:2"]


def test_on_a_cluster(cluster: ValkeyCluster) -> None:
    with cluster.client() as client:
        head, changed = versions.push(client, CFG, b"routes: []\n", ROUTES_KEY)
        assert changed and versions.head(client, CFG) == head
        versions.report(client, CFG, "p:1", {"version": head.version})
        assert [e["version"] for e in versions.fleet(client, CFG)] == [1]


def test_each_push_is_signed_for_its_own_number_bytes_and_key(redis_db: redis.Redis) -> None:
    """The signature covers the key name, version, sha256, pushed_at and pushed_by: it
    cannot be moved to other bytes, another number or another fleet's key."""
    versions.push(redis_db, CFG, b"routes: []\n", ROUTES_KEY)
    stored = versions.fetch(redis_db, CFG)
    assert stored is not None and stored.signature is not None
    assert stored.signature_problem(ROUTES_KEY, CFG.key) is None
    assert "does not verify" in str(stored.signature_problem(b"x" * 32, CFG.key))
    assert "does not verify" in str(stored.signature_problem(ROUTES_KEY, "other:routes"))
    for field, value in (("version", 5), ("pushed_by", "someone@else"), ("sha256", "ab" * 32)):
        redis_db.hset(CFG.key, field, value)
        moved = versions.fetch(redis_db, CFG)
        assert moved is not None and "does not verify" in str(
            moved.signature_problem(ROUTES_KEY, CFG.key)
        ), field
    redis_db.hdel(CFG.key, "sig")
    unsigned = versions.fetch(redis_db, CFG)
    assert unsigned is not None and "unsigned" in str(
        unsigned.signature_problem(ROUTES_KEY, CFG.key)
    )


def test_a_hand_written_version_is_replaced_by_the_next_push(redis_db: redis.Redis) -> None:
    """Same bytes as stored but unsigned: a push stores them again, signed (not
    'unchanged'), under the next number."""
    raw = b"routes: []\n"
    redis_db.hset(
        CFG.key,
        mapping={"yaml": raw, "sha256": hashlib.sha256(raw).hexdigest(), "version": 7},
    )
    head, changed = versions.push(redis_db, CFG, raw, ROUTES_KEY)
    assert changed and head.version == 8


def test_an_oversized_version_is_never_downloaded(redis_db: redis.Redis) -> None:
    versions.push(redis_db, CFG, b"# " + b"x" * 5000 + b"\n", ROUTES_KEY)
    stored = versions.fetch(redis_db, CFG, max_bytes=1000)
    assert stored is not None and (stored.raw, stored.size) == (b"", 5003)


def test_the_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from proxy.routing import signing

    assert signing.key_from_env("RANKGATE_ROUTES_KEY") == ROUTES_KEY
    monkeypatch.setenv("RANKGATE_ROUTES_KEY", "short")
    with pytest.raises(signing.RoutesKeyError, match="shorter than 16 bytes"):
        signing.key_from_env("RANKGATE_ROUTES_KEY")
    monkeypatch.delenv("RANKGATE_ROUTES_KEY")
    with pytest.raises(signing.RoutesKeyError, match="RANKGATE_ROUTES_KEY is not set"):
        signing.key_from_env("RANKGATE_ROUTES_KEY")


def test_a_garbage_version_number_neither_stops_polling_nor_pushing(
    redis_db: redis.Redis,
) -> None:
    redis_db.hset(CFG.key, mapping={"yaml": b"x", "sha256": "ab", "version": "abc"})
    assert versions.head(redis_db, CFG) == Head(-1, "ab")
    head, changed = versions.push(redis_db, CFG, b"routes: []\n", ROUTES_KEY)
    assert changed and head.version == 1
