"""RedisLink's auto-pipelined GET and MGET (proxy/store/autopipe.py) against real servers:
a real Valkey, and a real socket server on port 0 that stops answering."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection

from proxy.outcome.errors import Reason, from_redis
from proxy.store.autopipe import MAX_PENDING
from proxy.store.link import RedisLink, pack_get
from tests.support.common import start_valkey


def make_link(url: str, timeout: float = 2.0, max_connections: int = 2) -> RedisLink:
    return RedisLink(aioredis.ConnectionPool.from_url(url, socket_timeout=timeout), max_connections)


@pytest.fixture
async def link(redis_url: str) -> AsyncIterator[RedisLink]:
    link = make_link(redis_url)
    try:
        yield link
    finally:
        await link.close()


def pipes(link: RedisLink) -> list[object]:
    assert link._pipes is not None
    return list(link._pipes.pipes)


def link_clients(client: redis.Redis) -> int:
    """Connections the server holds, other than the test's own client."""
    return len(client.client_list()) - 1


def test_pack_get_is_what_redis_py_sends() -> None:
    for key in (b"emb:user:u1", "ünï".encode(), b"", b"a\r\nb"):
        assert pack_get(key) == b"".join(Connection().pack_command("GET", key))


async def test_many_concurrent_gets_share_one_connection(
    link: RedisLink, redis_db: redis.Redis
) -> None:
    values = {f"k{i}".encode(): f"value-{i}-".encode() * (i % 7) for i in range(MAX_PENDING - 6)}
    redis_db.mset(values)
    keys = [*values, b"absent"]
    replies = await asyncio.gather(*(link.get(k) for k in keys))
    assert replies == [*values.values(), None]
    # An MGET and GETs in one turn, each answered with its own reply.
    got = await asyncio.gather(link.get(b"k3"), link.mget([b"k1", b"nope", b"k2"]), link.get(b"k4"))
    assert got == [values[b"k3"], [values[b"k1"], None, values[b"k2"]], values[b"k4"]]
    assert len(pipes(link)) == 1 and link._all == []  # one pipelined connection, no other
    assert link_clients(redis_db) == 1


async def test_an_error_reply_fails_only_its_own_command(
    link: RedisLink, redis_db: redis.Redis
) -> None:
    redis_db.mset({f"k{i}": f"v{i}" for i in range(10)})
    redis_db.delete("k5")
    redis_db.hset("k5", "f", "1")  # GET on a hash: WRONGTYPE
    replies = await asyncio.gather(
        *(link.get(f"k{i}".encode()) for i in range(10)), return_exceptions=True
    )
    assert isinstance(replies[5], redis.ResponseError) and "WRONGTYPE" in str(replies[5])
    assert replies[:5] + replies[6:] == [f"v{i}".encode() for i in range(10) if i != 5]
    assert from_redis(replies[5]).reason is Reason.REDIS_ERROR  # type: ignore[arg-type]
    (pipe,) = pipes(link)
    assert await link.get(b"k9") == b"v9"
    assert pipes(link) == [pipe]  # the connection stayed open and in step


async def test_a_caller_that_gave_up_leaves_the_others_in_step(
    link: RedisLink, redis_db: redis.Redis
) -> None:
    redis_db.mset({f"k{i}": f"v{i}" for i in range(20)})

    async def get(i: int) -> bytes:
        return await link.get(f"k{i}".encode())  # type: ignore[no-any-return]

    tasks = [asyncio.create_task(get(i)) for i in range(20)]
    await asyncio.sleep(0)  # every command queued
    tasks[7].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[7], asyncio.CancelledError)
    assert [r for i, r in enumerate(results) if i != 7] == [
        f"v{i}".encode() for i in range(20) if i != 7
    ]
    assert await get(8) == b"v8"


async def test_a_paused_server_times_out_and_the_next_command_reconnects(
    redis_url: str, redis_db: redis.Redis
) -> None:
    redis_db.mset({"a": "1", "b": "2"})
    link = make_link(redis_url, timeout=0.1)
    try:
        assert await link.get(b"a") == b"1"  # connected
        (before,) = pipes(link)
        redis_db.execute_command("CLIENT", "PAUSE", 500, "ALL")
        started = time.monotonic()
        failed = await asyncio.gather(link.get(b"a"), link.get(b"b"), return_exceptions=True)
        waited = time.monotonic() - started
        assert all(isinstance(f, redis.TimeoutError) for f in failed), failed
        assert 0.09 <= waited < 1.0  # (failed before the 500 ms pause ended: above)
        assert from_redis(failed[0]).reason is Reason.REDIS_TIMEOUT  # type: ignore[arg-type]
        assert pipes(link) == [] and before.closed  # type: ignore[attr-defined]
        await asyncio.sleep(0.5)  # the pause is over; the late replies went with the socket
        assert await link.get(b"b") == b"2"
        assert await link.mget([b"a", b"b"]) == [b"1", b"2"]
        assert len(pipes(link)) == 1
    finally:
        await link.close()


class Silent:
    """A real server on port 0 that answers redis-py's connect handshake (HELLO 3, CLIENT
    MAINT_NOTIFICATIONS, two CLIENT SETINFO) and then never again; it counts connections
    and closes."""

    ANSWERS = (
        (b"HELLO", b"%1\r\n$5\r\nproto\r\n:3\r\n"),
        (b"MAINT_NOTIFICATIONS", b"+OK\r\n"),
        (b"SETINFO", b"+OK\r\n"),
    )

    def __init__(self) -> None:
        self.accepted = 0
        self.closed = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        seen = b""
        while data := await reader.read(4096):
            seen += data
            for command, answer in self.ANSWERS:
                while command in seen:
                    seen = seen.replace(command, b"", 1)
                    writer.write(answer)
        self.closed += 1
        writer.close()


async def test_a_server_that_never_answers_fails_the_pending_commands() -> None:
    silent = Silent()
    link = make_link(await silent.start(), timeout=0.05)
    try:
        for round_ in (1, 2):
            started = time.monotonic()
            failed = await asyncio.gather(
                *(link.get(b"k") for _ in range(5)), return_exceptions=True
            )
            # The pipe's own deadline, not redis-py's (the handshake was answered).
            assert all(isinstance(f, redis.TimeoutError) for f in failed), failed
            assert all("did not answer within" in str(f) for f in failed), failed
            assert time.monotonic() - started < 1.0
            await asyncio.sleep(0.05)
            # Its connection was closed, and each round opened a new one.
            assert (silent.accepted, silent.closed) == (round_, round_)
    finally:
        await link.close()
        assert silent.server is not None
        silent.server.close()


async def test_too_many_pending_uses_another_connection_then_fails(
    redis_url: str, redis_db: redis.Redis
) -> None:
    redis_db.set("a", "1")
    link = make_link(redis_url, timeout=1.0, max_connections=2)
    try:
        assert await link.get(b"a") == b"1"
        redis_db.execute_command("CLIENT", "PAUSE", 200, "ALL")
        futures = [link.get(b"a") for _ in range(2 * MAX_PENDING + 1)]
        assert len(pipes(link)) == 2  # the second connection took the overflow
        over = futures[-1]
        assert isinstance(over, asyncio.Future) and over.done()
        assert isinstance(over.exception(), redis.TimeoutError)
        replies = await asyncio.gather(*futures[:-1])  # the pause ends within the deadline
        assert replies == [b"1"] * (2 * MAX_PENDING)
    finally:
        await link.close()


@pytest.fixture
def killable() -> Iterator[tuple[object, redis.Redis, str]]:
    server = start_valkey()
    client = redis.Redis.from_url(server.connection_url)
    try:
        yield server, client, server.connection_url
    finally:
        client.close()
        if server.is_running():
            server.stop()


async def test_a_server_killed_mid_flight_is_unavailable(
    killable: tuple[object, redis.Redis, str],
) -> None:
    server, client, url = killable
    client.set("a", "1")
    link = make_link(url, timeout=5)
    try:
        assert await link.get(b"a") == b"1"
        client.execute_command("CLIENT", "PAUSE", 5000, "ALL")
        pending = [link.get(b"a") for _ in range(3)]
        await asyncio.sleep(0.05)  # written, unanswered
        started = time.monotonic()
        server.terminate()  # type: ignore[attr-defined]  # SIGKILL
        failed = await asyncio.gather(*pending, return_exceptions=True)
        assert time.monotonic() - started < 2  # the socket's end, not the 5 s deadline
        assert all(isinstance(f, redis.ConnectionError) for f in failed), failed
        assert from_redis(failed[0]).reason is Reason.REDIS_UNAVAILABLE  # type: ignore[arg-type]
        with pytest.raises(redis.ConnectionError) as refused:  # nothing listens now
            await link.get(b"a")
        assert from_redis(refused.value).reason is Reason.REDIS_UNAVAILABLE
    finally:
        await link.close()


async def test_auth_and_db_from_the_url(own_valkey: tuple[str, redis.Redis]) -> None:
    url, client = own_valkey
    client.config_set("requirepass", "s3cret")
    authed = redis.Redis.from_url(url, password="s3cret", db=3)
    try:
        authed.set("k", "in db 3")
        port = url.rsplit(":", 1)[1].split("/")[0]
        link = make_link(f"redis://:s3cret@127.0.0.1:{port}/3")
        try:
            assert await link.get(b"k") == b"in db 3"
            assert await link.mget([b"k", b"other"]) == [b"in db 3", None]
        finally:
            await link.close()
        wrong = make_link(f"redis://:nope@127.0.0.1:{port}/3")
        try:
            with pytest.raises(redis.ConnectionError):  # AuthenticationError is one
                await wrong.get(b"k")
        finally:
            await wrong.close()
    finally:
        authed.config_set("requirepass", "")
        authed.close()


async def test_close_fails_what_is_pending_and_disconnects(
    link: RedisLink, redis_db: redis.Redis
) -> None:
    redis_db.set("a", "1")
    assert await link.get(b"a") == b"1"
    assert link_clients(redis_db) == 1
    late = link.get(b"a")
    await link.close()
    with pytest.raises(redis.ConnectionError):
        await late
    await asyncio.sleep(0.05)
    assert link_clients(redis_db) == 0
