"""The hot-path link to a Redis Cluster (or Valkey cluster): the slot map, one RedisLink
per primary, MOVED/ASK, and one pipelined batch per node with all nodes in parallel.

Why not redis-py's RedisCluster here: its ``mget_nonatomic`` took ~1.1 ms for 101 keys
on three nodes, against ~325 us for one pipeline of per-slot MGETs per node with the
nodes in parallel (hash-tag buckets, see proxy/keys.py), and it carries the per-command
overhead RedisLink avoids. RedisCluster stays the full-API client plugins get.

Failures stay local: a node that does not answer fails only its own keys (returned as
UNAVAILABLE, never cached as absent), then fails fast for NODE_RETRY_S so a dead node
costs no connect attempt per request, while the slot map is re-read until the cluster
has moved its slots to a promoted replica. When every key failed, the first error is
raised, and the store names it (redis-unavailable, redis-timeout, redis-error).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot
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

from proxy.redislink import UNAVAILABLE, RedisLink, pack_mget, read_replies

log = logging.getLogger("rankgate.cluster")

SLOTS = 16384
NODE_RETRY_S = 0.5  # after a node failed, its keys fail at once this long
REFRESH_INTERVAL_S = 0.2  # at most this often re-read the slot map
REFRESH_TIMEOUT_S = 0.5  # at least this long for CLUSTER SLOTS (off the request path)
MAX_REDIRECTS = 3
_TAG_MEMO = 4096  # hash tag -> slot; bucketed keys share 16 tags

# node -> its slots, each with the positions (in the caller's key list) of its keys
Batches = dict["Node", list[tuple[int, list[int]]]]


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


class Node:
    """One primary: its link, and whether it failed a moment ago."""

    __slots__ = ("addr", "error", "failed_until", "host", "link", "port")

    def __init__(self, host: str, port: int, link: RedisLink) -> None:
        self.host = host
        self.port = port
        self.addr = f"{host}:{port}"
        self.link = link
        self.failed_until = 0.0
        self.error: BaseException | None = None

    def check(self) -> None:
        """Raise the node's last error while it is in its fail-fast window."""
        if self.failed_until and time.monotonic() < self.failed_until:
            assert self.error is not None
            raise type(self.error)(f"{self.addr} failed {NODE_RETRY_S}s ago: {self.error}")

    def __repr__(self) -> str:
        return f"Node({self.addr})"


class ClusterLink:
    """Same calls as RedisLink (``command``, ``pipeline`` is per node, ``mget``, ``close``).

    ``seed`` is a pool for the configured URL: its connection settings (password, TLS,
    timeouts) are used for every node. A server without cluster support is found on
    first contact; from then on everything goes to the seed as on one node.
    """

    def __init__(self, seed: aioredis.ConnectionPool, max_connections: int) -> None:
        self.max_connections = max_connections
        kwargs = dict(seed.connection_kwargs)
        # One deadline per call, kept here: with a socket timeout redis-py wraps every
        # send in asyncio.wait_for (a task each, ~20 us), three sends per lookup.
        self.timeout: float | None = kwargs.pop("socket_timeout", None)
        self._kwargs = {**kwargs, "socket_timeout": None}
        self._conn_class = seed.connection_class
        self._nodes: dict[str, Node] = {}
        self.seed = self._node(str(kwargs.get("host", "127.0.0.1")), int(kwargs.get("port", 6379)))
        self._slots: list[Node | None] = [None] * SLOTS
        self._tags: dict[bytes, int] = {}
        self.single = False  # the server said it has no cluster support
        self.mapped = False  # a slot map has been read
        self.refreshes = 0
        self._last_refresh = 0.0
        self._refresh_task: asyncio.Task[None] | None = None

    # -- topology ----------------------------------------------------------------

    @property
    def primaries(self) -> list[Node]:
        return list({id(n): n for n in self._slots if n is not None}.values())

    def _node(self, host: str, port: int) -> Node:
        addr = f"{host}:{port}"
        node = self._nodes.get(addr)
        if node is None:
            pool = aioredis.ConnectionPool(
                connection_class=self._conn_class,
                max_connections=self.max_connections,
                **{**self._kwargs, "host": host, "port": port},
            )
            node = Node(host, port, RedisLink(pool, self.max_connections))
            self._nodes[addr] = node
        return node

    async def start(self) -> bool:
        """Read the slot map once; False when no node answered (tried again on use)."""
        try:
            await self.refresh()
        except (RedisError, OSError) as exc:
            log.warning("Redis cluster: no slot map yet (%s); will retry on first use", exc)
            return False
        return True

    async def refresh(self) -> None:
        """Read CLUSTER SLOTS from the first node that answers; raises when none does."""
        self._last_refresh = time.monotonic()
        self.refreshes += 1
        nodes = sorted(self._nodes.values(), key=lambda n: n.failed_until)
        error: BaseException | None = None
        for node in nodes:
            try:
                async with asyncio.timeout(max(self.timeout or 0.0, REFRESH_TIMEOUT_S)):
                    reply = await node.link.command("CLUSTER", "SLOTS")
            except ResponseError as exc:
                if "cluster support disabled" in str(exc).lower():
                    self.single = self.mapped = True
                    return
                error = exc
            except (RedisError, OSError) as exc:  # TimeoutError is an OSError
                error = exc
            else:
                self._apply(reply, node)
                return
        raise RedisConnectionError(f"no cluster node answered CLUSTER SLOTS: {error}")

    def _apply(self, reply: Sequence[Any], asked: Node) -> None:
        slots: list[Node | None] = [None] * SLOTS
        for entry in reply:
            start, end, primary = int(entry[0]), int(entry[1]), entry[2]
            host = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
            if host in ("", "?"):  # the node does not know its own address: the one we asked
                host = asked.host
            node = self._node(host, int(primary[1]))
            slots[start : end + 1] = [node] * (end - start + 1)
        before = {n.addr for n in self.primaries}
        self._slots = slots
        self.mapped = True
        after = {n.addr for n in self.primaries}
        if before != after:
            log.info("Redis cluster: primaries %s", ", ".join(sorted(after)))

    def schedule_refresh(self) -> None:
        """Re-read the slot map soon, once, whatever the number of callers."""
        if self._refresh_task is not None and not self._refresh_task.done():
            return
        self._refresh_task = asyncio.ensure_future(self._refresh_later())

    async def _refresh_later(self) -> None:
        wait = self._last_refresh + REFRESH_INTERVAL_S - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            await self.refresh()
        except (RedisError, OSError) as exc:
            log.debug("slot map refresh failed: %s", exc)

    def _failed(self, node: Node, exc: BaseException) -> None:
        node.error = exc
        node.failed_until = time.monotonic() + NODE_RETRY_S
        self.schedule_refresh()

    def _owner(self, slot: int) -> Node:
        node = self._slots[slot]
        if node is None:
            # No map yet (or an uncovered slot): the seed answers MOVED or CLUSTERDOWN.
            if not self.mapped:
                self.schedule_refresh()
            return self.seed
        return node

    def _slot(self, key: bytes) -> int:
        start = key.find(b"{")
        if start >= 0:
            end = key.find(b"}", start + 1)
            if end > start + 1:
                tag = key[start + 1 : end]
                slot = self._tags.get(tag)
                if slot is None:
                    if len(self._tags) >= _TAG_MEMO:
                        self._tags.clear()
                    slot = self._tags[tag] = key_slot(tag)
                return slot
        return key_slot(key)

    def _redirected(self, exc: AskError) -> Node:
        node = self._node(exc.host, exc.port)
        if isinstance(exc, MovedError):
            self._slots[exc.slot_id] = node
            self.schedule_refresh()  # a resharding moves more than one slot
        return node

    # -- commands ------------------------------------------------------------------

    async def command(self, *args: Any) -> Any:
        """One command, sent to the node of its first argument's slot (the key, for the
        commands plugins use); MOVED and ASK send it on, at most MAX_REDIRECTS times."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._command(args)
        except TimeoutError:
            raise RedisTimeoutError(f"Redis cluster: no answer in {self.timeout}s") from None

    async def _command(self, args: tuple[Any, ...]) -> Any:
        if not self.mapped:
            await self._first_contact()
        if self.single:
            return await self.seed.link.command(*args)
        node = self._owner(self._slot(_encode(args[1]))) if len(args) > 1 else self._any()
        asking = False
        for _ in range(MAX_REDIRECTS + 1):
            node.check()
            try:
                if asking:
                    reply = (await node.link.pipeline([("ASKING",), args]))[1]
                    if isinstance(reply, ResponseError):
                        raise reply
                    return reply
                return await node.link.command(*args)
            except AskError as exc:
                asking = not isinstance(exc, MovedError)
                node = self._redirected(exc)
            except ClusterDownError:
                self.schedule_refresh()
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                self._failed(node, exc)
                raise
        raise ResponseError(f"more than {MAX_REDIRECTS} cluster redirections")

    async def _first_contact(self) -> None:
        """No slot map yet (the cluster was down at start): try to read one, at most
        every REFRESH_INTERVAL_S; meanwhile the seed answers (or fails) for itself."""
        if time.monotonic() - self._last_refresh < REFRESH_INTERVAL_S:
            return
        with contextlib.suppress(RedisError, OSError):
            await self.refresh()

    def _any(self) -> Node:
        for node in self.primaries:
            if not node.failed_until or time.monotonic() >= node.failed_until:
                return node
        return self.seed

    async def mget(self, keys: list[bytes], slots: list[int] | None = None) -> list[Any]:
        """Values of ``keys`` in order; a down node's keys come back as UNAVAILABLE.
        ``slots``: the keys' slots when the caller knows them (KeyTemplate.encoded).
        Raises only when no key could be read."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._mget(keys, slots)
        except TimeoutError:
            raise RedisTimeoutError(f"Redis cluster: no answer in {self.timeout}s") from None

    async def _mget(self, keys: list[bytes], slots: list[int] | None) -> list[Any]:
        if not self.mapped:
            await self._first_contact()
        if self.single:
            return await self.seed.link.mget(keys)
        out: list[Any] = [UNAVAILABLE] * len(keys)
        by_slot: dict[int, list[int]] = {}
        for pos, s in enumerate(slots if slots is not None else map(self._slot, keys)):
            positions = by_slot.get(s)
            if positions is None:
                by_slot[s] = [pos]
            else:
                positions.append(pos)
        batches: Batches = {}
        for s, positions in by_slot.items():
            batches.setdefault(self._owner(s), []).append((s, positions))
        errors: list[BaseException] = []
        redirects = await self._round(keys, batches, out, errors, asking=False)
        if redirects:  # one more round: slots that moved (or are moving) elsewhere
            moved: Batches = {}
            asked: Batches = {}
            for exc, s, positions in redirects:
                target = moved if isinstance(exc, MovedError) else asked
                target.setdefault(self._redirected(exc), []).append((s, positions))
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
    ) -> list[tuple[AskError, int, list[int]]]:
        """One pipeline per node, an MGET per slot (a cluster refuses MGET across slots,
        even on one node). Every node's pipeline is written before any reply is read:
        the nodes work in parallel without a task per node. Fills ``out``; returns the
        redirected slots."""
        sent: list[tuple[Node, AbstractConnection, list[tuple[int, list[int]]]]] = []
        redirects: list[tuple[AskError, int, list[int]]] = []
        try:
            for node, slots in batches.items():
                packed = b"".join(pack_mget([keys[p] for p in ps], asking) for _, ps in slots)
                try:
                    node.check()
                    conn = await node.link.acquire()
                except (RedisError, OSError) as exc:
                    errors.append(exc)
                    continue
                try:
                    await conn.send_packed_command(packed, check_health=False)
                except (RedisError, OSError) as exc:
                    node.link.release(conn)
                    self._node_error(node, exc, errors)
                    continue
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
                for (s, positions), reply in zip(slots, replies, strict=True):
                    if isinstance(reply, AskError):
                        redirects.append((reply, s, positions))
                    elif isinstance(reply, ResponseError):
                        if isinstance(reply, (ClusterDownError, TryAgainError)):
                            self.schedule_refresh()
                        errors.append(reply)
                    else:
                        for p, value in zip(positions, reply, strict=True):
                            out[p] = value
        finally:
            # Cancelled (the budget ran out) with replies still unread: those
            # connections are out of step, so they are closed before reuse.
            for node, conn, _ in sent:
                await conn.disconnect(nowait=True)
                node.link.release(conn)
        return redirects

    def _node_error(self, node: Node, exc: BaseException, errors: list[BaseException]) -> None:
        if _is_down(exc):
            self._failed(node, exc)
        errors.append(exc)

    async def close(self) -> None:
        task, self._refresh_task = self._refresh_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for node in self._nodes.values():
            await node.link.close()
        self._nodes.clear()

    def describe(self) -> dict[str, object]:
        if self.single:
            return {"mode": "single", "node": self.seed.addr}
        return {
            "mode": "cluster",
            "mapped": self.mapped,
            "primaries": sorted(n.addr for n in self.primaries),
            "refreshes": self.refreshes,
        }
