"""Fixtures: a real Redis-protocol server (embedded Valkey, or REDIS_URL when set), and
the demo for the modules that test it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
import redis

from tests.support.clusters import ValkeyCluster
from tests.support.common import env_redis_url, start_valkey

if TYPE_CHECKING:
    from demo.run import Demo

KINDS = ("unit", "e2e", "edge", "docs")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its kind, from the folder it lives in (tests/<kind>/...)."""
    for item in items:
        parts = item.path.parts
        kind = next((k for k in KINDS if k in parts[parts.index("tests") + 1 :][:1]), None)
        if kind is not None:
            item.add_marker(getattr(pytest.mark, kind))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = env_redis_url()
    if url:
        yield url
        return
    server = start_valkey()
    try:
        yield server.connection_url
    finally:
        server.stop()


@pytest.fixture
def own_valkey() -> Iterator[tuple[str, redis.Redis]]:
    """A Valkey of the test's own (its URL and a client), stopped after it: for tests
    that write streams or stop the server."""
    server = start_valkey()
    client = redis.Redis.from_url(server.connection_url)
    try:
        yield server.connection_url, client
    finally:
        client.close()
        server.stop()


@pytest.fixture
def redis_db(redis_url: str) -> Iterator[redis.Redis]:
    """A synchronous client on a flushed database, for seeding test data."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


@pytest.fixture(scope="session")
def valkey_cluster() -> Iterator[ValkeyCluster]:
    """Three Valkey primaries in cluster mode on loopback (tests/support/clusters.py): ~2 s once
    per session. Tests that kill nodes start a cluster of their own."""
    cluster = ValkeyCluster(primaries=3).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster(valkey_cluster: ValkeyCluster) -> Iterator[ValkeyCluster]:
    """The session's cluster, flushed before and after the test."""
    valkey_cluster.flush()
    try:
        yield valkey_cluster
    finally:
        valkey_cluster.flush()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def demo() -> AsyncIterator[Demo]:
    """`rankgate demo` with the committed config and data, on free ports: one per test
    module (test_demo, test_demo_browser), whose tests share the demo's event loop."""
    from demo.run import DEFAULT_CONFIG, DEFAULT_DATA, Demo, DemoOptions

    opts = DemoOptions(
        config=DEFAULT_CONFIG, data=DEFAULT_DATA, port=0, origin_port=0, admin_port=0
    )
    d = Demo(opts)
    await d.start()
    try:
        yield d
    finally:
        await d.stop()


# The fleet key that signs routes versions (proxy/routing/signing.py), for tests that
# push to Redis or serve with routes_source: redis (in this process, or in a child that
# inherits the environment).
ROUTES_KEY = b"test-fleet-routes-key-0123456789"


@pytest.fixture
def routes_key(monkeypatch: pytest.MonkeyPatch) -> bytes:
    monkeypatch.setenv("RANKGATE_ROUTES_KEY", ROUTES_KEY.decode())
    return ROUTES_KEY
