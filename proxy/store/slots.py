"""Which node of a Redis Cluster serves which slot, and which nodes failed a moment ago.

The map is read with ``CLUSTER SLOTS`` from the first node that answers: at start, after
a ``MOVED`` (a resharding moves more than one slot) and while a node fails (until the
cluster has promoted a replica), at most every REFRESH_INTERVAL_S. A node that failed
fails at once for NODE_RETRY_S, so that a dead node costs no connect attempt per
request; then it is tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from proxy.store.link import RedisLink

log = logging.getLogger("rankgate.cluster")

SLOTS = 16384
NODE_RETRY_S = 0.5  # after a node failed, its keys fail at once this long
REFRESH_INTERVAL_S = 0.2  # at most this often re-read the slot map
REFRESH_TIMEOUT_S = 0.5  # at least this long for CLUSTER SLOTS (off the request path)
_TAG_MEMO = 4096  # hash tag -> slot; bucketed keys share a few tags


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

    @property
    def failing(self) -> bool:
        return bool(self.failed_until) and time.monotonic() < self.failed_until

    def check(self) -> None:
        """Raise the node's last error while it is in its fail-fast window."""
        if self.failing:
            assert self.error is not None
            raise type(self.error)(f"{self.addr} failed {NODE_RETRY_S}s ago: {self.error}")

    def __repr__(self) -> str:
        return f"Node({self.addr})"


class SlotMap:
    """Slots -> nodes, one RedisLink per node made from the seed pool's settings."""

    def __init__(self, seed: aioredis.ConnectionPool, max_connections: int) -> None:
        self.max_connections = max_connections
        kwargs = dict(seed.connection_kwargs)
        # No socket timeout on the nodes' connections: ClusterLink gives each call one
        # deadline (with one, redis-py wraps every send in a task: ~20 us each).
        self.timeout: float | None = kwargs.pop("socket_timeout", None)
        self._kwargs = {**kwargs, "socket_timeout": None}
        self._conn_class = seed.connection_class
        self._nodes: dict[str, Node] = {}
        self.seed = self.node(str(kwargs.get("host", "127.0.0.1")), int(kwargs.get("port", 6379)))
        self._slots: list[Node | None] = [None] * SLOTS
        self._tags: dict[bytes, int] = {}
        self.single = False  # the server said it has no cluster support
        self.mapped = False  # a slot map has been read
        self.refreshes = 0
        self._last_refresh = 0.0
        self._refresh_task: asyncio.Task[None] | None = None

    @property
    def primaries(self) -> list[Node]:
        return list({id(n): n for n in self._slots if n is not None}.values())

    def node(self, host: str, port: int) -> Node:
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

    def owner(self, slot: int) -> Node:
        node = self._slots[slot]
        if node is None:
            # No map yet (or an uncovered slot): the seed answers MOVED or CLUSTERDOWN.
            if not self.mapped:
                self.schedule_refresh()
            return self.seed
        return node

    def any(self) -> Node:
        """A node for a command without a key."""
        return next((n for n in self.primaries if not n.failing), self.seed)

    def slot(self, key: bytes) -> int:
        """key_slot(key), remembering the slot of each hash tag met."""
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

    def redirected(self, exc: AskError) -> Node:
        """The node a MOVED or ASK names; a MOVED also remaps its slot."""
        node = self.node(exc.host, exc.port)
        if isinstance(exc, MovedError):
            self._slots[exc.slot_id] = node
            self.schedule_refresh()  # a resharding moves more than one slot
        return node

    def failed(self, node: Node, exc: BaseException) -> None:
        node.error = exc
        node.failed_until = time.monotonic() + NODE_RETRY_S
        self.schedule_refresh()

    async def refresh(self) -> None:
        """Read CLUSTER SLOTS from the first node that answers; raises when none does."""
        self._last_refresh = time.monotonic()
        self.refreshes += 1
        error: BaseException | None = None
        for node in sorted(self._nodes.values(), key=lambda n: n.failed_until):
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

    async def first_contact(self) -> None:
        """No map yet (the cluster was down at start): try to read one, at most every
        REFRESH_INTERVAL_S; meanwhile the seed answers (or fails) for itself."""
        if time.monotonic() - self._last_refresh < REFRESH_INTERVAL_S:
            return
        with contextlib.suppress(RedisError, OSError):
            await self.refresh()

    def _apply(self, reply: Sequence[Any], asked: Node) -> None:
        slots: list[Node | None] = [None] * SLOTS
        for entry in reply:
            start, end, primary = int(entry[0]), int(entry[1]), entry[2]
            host = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
            if host in ("", "?"):  # the node does not know its own address: the one we asked
                host = asked.host
            node = self.node(host, int(primary[1]))
            slots[start : end + 1] = [node] * (end - start + 1)
        before = {n.addr for n in self.primaries}
        self._slots = slots
        self.mapped = True
        after = {n.addr for n in self.primaries}
        if before != after:
            log.info("Redis cluster: primaries %s", ", ".join(sorted(after)))

    def schedule_refresh(self) -> None:
        """Re-read the map soon, once, whatever the number of callers."""
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

    async def close(self) -> None:
        task, self._refresh_task = self._refresh_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for node in self._nodes.values():
            await node.link.close()
        self._nodes.clear()
