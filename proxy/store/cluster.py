"""The hot-path link to a Redis Cluster (or Valkey cluster): commands to their key's
node with MOVED/ASK followed, and an item lookup as one pipeline per node (an MGET per
slot), every node's pipeline written before any reply is read.

Why not redis-py's RedisCluster here: its ``mget_nonatomic`` was ~6x slower than this
for 100 keys on three nodes (bench/cluster_lookup.py), and it carries the per-command
overhead RedisLink avoids. RedisCluster stays the full-API client plugins get.

Failures stay local: a node that does not answer fails only its own keys (returned as
UNAVAILABLE, never cached as absent), and fails fast for a moment after (SlotMap).
When every key failed, the first error is raised, and the store names it
(redis-unavailable, redis-timeout, redis-error).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxy.store.link import UNAVAILABLE, pack_mget, read_replies
from proxy.store.slots import Node, SlotMap

log = logging.getLogger("rankgate.cluster")

MAX_REDIRECTS = 3

T = TypeVar("T")
Slots = list[tuple[int, list[int]]]  # (slot, positions of its keys in the caller's list)
Batches = dict[Node, Slots]
Redirects = list[tuple[AskError, int, list[int]]]


def _is_down(exc: BaseException) -> bool:
    return isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError))


def _encode(arg: Any) -> bytes:
    """A command argument's bytes, for its slot (as redis-py would send it)."""
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, float):
        return repr(arg).encode()
    return str(arg).encode()


class ClusterLink:
    """RedisLink's calls (``command``, ``mget``, ``close``) on a cluster.

    ``seed`` is a pool for the configured URL: its connection settings (password, TLS,
    timeouts) are used for every node. A server without cluster support is found on
    first contact; from then on everything goes to it as to one node.
    """

    def __init__(self, seed: aioredis.ConnectionPool, max_connections: int) -> None:
        self.map = SlotMap(seed, max_connections)
        self.timeout = self.map.timeout

    @property
    def single(self) -> bool:
        return self.map.single

    @property
    def seed(self) -> Node:
        return self.map.seed

    @property
    def primaries(self) -> list[Node]:
        return self.map.primaries

    async def start(self) -> bool:
        """Read the slot map once; False when no node answered (tried again on use)."""
        try:
            await self.map.refresh()
        except (RedisError, OSError) as exc:
            log.warning("Redis cluster: no slot map yet (%s); will retry on first use", exc)
            return False
        return True

    async def _deadline(self, call: Awaitable[T]) -> T:
        """One deadline (redis.timeout_ms) for the whole call, redirections included."""
        try:
            async with asyncio.timeout(self.timeout):
                return await call
        except TimeoutError:
            raise RedisTimeoutError(f"Redis cluster: no answer in {self.timeout}s") from None

    async def command(self, *args: Any) -> Any:
        """One command, sent to the node of its first argument's slot (the key, for the
        commands plugins use); MOVED and ASK send it on, at most MAX_REDIRECTS times."""
        return await self._deadline(self._command(args))

    async def _command(self, args: tuple[Any, ...]) -> Any:
        slots = self.map
        if not slots.mapped:
            await slots.first_contact()
        if slots.single:
            return await slots.seed.link.command(*args)
        node = slots.owner(slots.slot(_encode(args[1]))) if len(args) > 1 else slots.any()
        asking = False
        for _ in range(MAX_REDIRECTS + 1):
            node.check()
            try:
                if not asking:
                    return await node.link.command(*args)
                reply = (await node.link.pipeline([("ASKING",), args]))[1]
                if isinstance(reply, ResponseError):
                    raise reply
                return reply
            except AskError as exc:
                asking = not isinstance(exc, MovedError)
                node = slots.redirected(exc)
            except ClusterDownError:
                slots.schedule_refresh()
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                slots.failed(node, exc)
                raise
        raise ResponseError(f"more than {MAX_REDIRECTS} cluster redirections")

    async def ping(self) -> None:
        await self.command("PING")

    async def get(self, key: bytes) -> Any:
        """RedisLink.get's call: on a cluster, ``command``'s path (not auto-pipelined)."""
        return await self.command("GET", key)

    async def mget(self, keys: list[bytes], slots: list[int] | None = None) -> list[Any]:
        """Values of ``keys`` in order; a down node's keys come back as UNAVAILABLE.
        ``slots``: the keys' slots when the caller knows them (KeyTemplate.encoded).
        Raises only when no key could be read."""
        return await self._deadline(self._mget(keys, slots))

    async def _mget(self, keys: list[bytes], slots: list[int] | None) -> list[Any]:
        smap = self.map
        if not smap.mapped:
            await smap.first_contact()
        if smap.single:
            return await smap.seed.link.mget(keys)
        by_slot: dict[int, list[int]] = {}
        for pos, s in enumerate(slots if slots is not None else map(smap.slot, keys)):
            positions = by_slot.get(s)
            if positions is None:
                by_slot[s] = [pos]
            else:
                positions.append(pos)
        batches: Batches = {}
        for s, positions in by_slot.items():
            batches.setdefault(smap.owner(s), []).append((s, positions))
        out: list[Any] = [UNAVAILABLE] * len(keys)
        errors: list[BaseException] = []
        redirects = await self._round(keys, batches, out, errors, asking=False)
        if redirects:  # one more round: slots that moved (or are moving) elsewhere
            moved: Batches = {}
            asked: Batches = {}
            for exc, s, positions in redirects:
                target = moved if isinstance(exc, MovedError) else asked
                target.setdefault(smap.redirected(exc), []).append((s, positions))
            again = await self._round(keys, moved, out, errors, asking=False)
            again += await self._round(keys, asked, out, errors, asking=True)
            errors.extend(exc for exc, _, _ in again)
        if errors and all(v is UNAVAILABLE for v in out):
            raise errors[0]
        return out

    async def _round(
        self,
        keys: list[bytes],
        batches: Batches,
        out: list[Any],
        errors: list[BaseException],
        asking: bool,
    ) -> Redirects:
        """One pipeline per node, an MGET per slot (a cluster refuses MGET across slots,
        even on one node): all written, then all read. Fills ``out``; returns the
        redirected slots."""
        sent: list[tuple[Node, AbstractConnection, Slots]] = []
        redirects: Redirects = []
        try:
            for node, slots in batches.items():
                conn = await self._send(node, keys, slots, errors, asking)
                if conn is not None:
                    sent.append((node, conn, slots))
            while sent:
                node, conn, slots = sent[0]
                try:
                    replies = await read_replies(conn, len(slots) * (2 if asking else 1))
                except (RedisError, OSError) as exc:
                    self._node_error(node, exc, errors)
                    continue
                finally:
                    del sent[0]
                    node.link.release(conn)
                if asking:
                    replies = replies[1::2]  # the ASKING replies are +OK
                self._take(slots, replies, out, errors, redirects)
        finally:
            # Cancelled (the budget ran out) with replies still unread: those
            # connections are out of step, so they are closed before reuse.
            for node, conn, _ in sent:
                await conn.disconnect(nowait=True)
                node.link.release(conn)
        return redirects

    async def _send(
        self, node: Node, keys: list[bytes], slots: Slots, errors: list[BaseException], asking: bool
    ) -> AbstractConnection | None:
        """Write one node's pipeline; its connection, or None when the node failed."""
        packed = b"".join(pack_mget([keys[p] for p in ps], asking) for _, ps in slots)
        try:
            node.check()
            conn = await node.link.acquire()
        except (RedisError, OSError) as exc:
            errors.append(exc)
            return None
        try:
            await conn.send_packed_command(packed, check_health=False)
        except (RedisError, OSError) as exc:
            node.link.release(conn)
            self._node_error(node, exc, errors)
            return None
        return conn

    def _take(
        self,
        slots: Slots,
        replies: list[Any],
        out: list[Any],
        errors: list[BaseException],
        redirects: Redirects,
    ) -> None:
        for (s, positions), reply in zip(slots, replies, strict=True):
            if isinstance(reply, AskError):
                redirects.append((reply, s, positions))
            elif isinstance(reply, ResponseError):
                if isinstance(reply, (ClusterDownError, TryAgainError)):
                    self.map.schedule_refresh()
                errors.append(reply)
            else:
                for p, value in zip(positions, reply, strict=True):
                    out[p] = value

    def _node_error(self, node: Node, exc: BaseException, errors: list[BaseException]) -> None:
        if _is_down(exc):
            self.map.failed(node, exc)
        errors.append(exc)

    async def close(self) -> None:
        await self.map.close()

    def describe(self) -> dict[str, object]:
        if self.map.single:
            return {"mode": "single", "node": self.map.seed.addr}
        return {
            "mode": "cluster",
            "mapped": self.map.mapped,
            "primaries": sorted(n.addr for n in self.map.primaries),
            "refreshes": self.map.refreshes,
        }
