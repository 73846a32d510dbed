"""Fixtures: a real Redis-protocol server (embedded Valkey, or REDIS_URL when set)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.support import env_redis_url, start_valkey


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
def redis_db(redis_url: str) -> Iterator[redis.Redis]:
    """A synchronous client on a flushed database, for seeding test data."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()
