"""Auto-pipelining for the hot path's GET and MGET: the commands issued in one event-loop
turn leave in one write, and one read can answer many callers.

A redis-py connection does the connecting (URL, AUTH/HELLO, SELECT, TLS, its connect
timeout); its transport is then handed to a ``Pipe`` (an ``asyncio.Protocol``), which
writes the turn's packed commands with one ``transport.write`` (one ``call_soon`` per
turn), feeds what arrives to a ``hiredis.Reader`` and resolves the callers' futures in
order, in ``data_received``: no reader task, no per-command write + drain, no parser
object per reply. Why: at one GET per re-rank, redis-py's send + read was the largest
Redis share of a re-rank's CPU (docs/performance.md).

In step or closed: every command has one deadline (the link's socket timeout, i.e.
``redis.timeout_ms``) from when it is sent on an open connection, as redis-py's read
timeout ran from its send; commands issued while a connection opens wait within
redis-py's connect and handshake timeouts (``redis.timeout_ms`` each), then are written
and timed. The oldest pending command is the first to expire (replies come in order),
so one timer per connection watches it; when it expires, or the connection errs or is
closed by the server, the connection is aborted and all its pending commands fail
(redis-py's TimeoutError / ConnectionError, which the store names redis-timeout /
redis-unavailable). A caller that gave up (cancelled) still has its reply read and
dropped. The next command opens a new connection. Error replies fail only their command
(redis-py's ResponseError and subclasses, from its own ``parse_error``).

Bounded: a connection takes at most ``MAX_PENDING`` commands awaiting replies and none
while its transport's write buffer is over the high-water mark (``pause_writing``); then
another connection is used or opened, up to ``MAX_PIPES``; past that a command fails at
once with a TimeoutError (a backlog that size means Redis is not keeping up).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

MAX_PENDING = 256  # commands awaiting replies on one connection
MAX_PIPES = 4  # pipelined connections per link (one is the usual)

_MORE = object()  # hiredis: no complete reply buffered yet
_PUSH: Any = getattr(hiredis, "PushNotification", ())  # RESP3 pushes answer no command


class Pipe(asyncio.Protocol):
    """One pipelined connection: its queued writes, its pending futures, its deadline."""

    def __init__(self, owner: AutoPipeline) -> None:
        self.owner = owner
        self.loop = owner.loop
        self.transport: asyncio.Transport | None = None  # None while connecting
        self.pending: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.out: list[bytes] = []
        self.flush_scheduled = False
        self.paused = False  # the transport's write buffer is over its high-water mark
        self.closed = False
        self.timer: asyncio.TimerHandle | None = None
        self.reader = hiredis.Reader(
            protocolError=InvalidResponse,
            replyError=BaseParser.parse_error,
            notEnoughData=_MORE,
        )
        self.opening: asyncio.Task[None] | None = None
        self.writer: asyncio.StreamWriter | None = None

    @property
    def full(self) -> bool:
        return self.paused or len(self.pending) >= MAX_PENDING

    def send(self, packed: bytes, fut: asyncio.Future[Any]) -> None:
        self.out.append(packed)
        if self.transport is None:  # connecting: its deadline starts once connected
            self.pending.append((fut, math.inf))
            return
        deadline = self.loop.time() + self.owner.timeout
        self.pending.append((fut, deadline))
        if self.timer is None:
            self.timer = self.loop.call_at(deadline, self._expire)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.closed or self.transport is None or not self.out:
            return
        out = self.out
        self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    # -- opening: redis-py's handshake, then its transport is ours -------------------

    async def open(self, pool: aioredis.ConnectionPool) -> None:
        conn = pool.make_connection()
        try:
            await conn.connect()
            writer = conn._writer
            assert writer is not None and conn._reader is not None
            if conn._reader._buffer:  # type: ignore[attr-defined]
                raise InvalidResponse("unread bytes after the connect handshake")
        except BaseException as exc:
            await conn.disconnect(nowait=True)
            # redis-py's own errors (refused, timed out, AUTH) keep their kind.
            self.fail(exc if isinstance(exc, RedisError) else RedisConnectionError(repr(exc)))
            raise
        transport = writer.transport
        # redis-py lets go of the stream (its __del__ would close our transport); the
        # writer is kept as long as the transport, whose closing its own __del__ checks.
        conn._writer = conn._reader = None
        self.writer = writer
        self.opening = None
        if self.closed:  # failed (deadline, close) while the handshake ran
            transport.abort()
            return
        transport.set_protocol(self)
        self.transport = transport  # type: ignore[assignment]
        if self.pending:  # what was queued while connecting: written now, timed from now
            deadline = self.loop.time() + self.owner.timeout
            self.pending = deque((fut, deadline) for fut, _ in self.pending)
            self.timer = self.loop.call_at(deadline, self._expire)
            self._flush()

    # -- asyncio.Protocol --------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        pending = self.pending
        try:
            reader.feed(data)
            reply = reader.gets()
            while reply is not _MORE:
                if not isinstance(reply, _PUSH):
                    fut = pending.popleft()[0]
                    if fut.done():
                        pass  # its caller gave up; the reply is read all the same
                    elif isinstance(reply, ResponseError):
                        fut.set_exception(reply)
                    else:
                        fut.set_result(reply)
                reply = reader.gets()
        except (InvalidResponse, IndexError) as exc:  # garbage, or a reply nobody asked for
            self.fail(RedisConnectionError(f"Redis connection out of step: {exc!r}"))

    def eof_received(self) -> bool:
        return False  # the transport closes; connection_lost fails what is pending

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"Redis closed the connection ({exc or 'EOF'})"))

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    # -- failing -------------------------------------------------------------------------

    def _expire(self) -> None:
        self.timer = None
        if not self.pending:
            return
        deadline = self.pending[0][1]
        if deadline > self.loop.time():  # the command it was set for was answered
            self.timer = self.loop.call_at(deadline, self._expire)
            return
        self.fail(RedisTimeoutError(f"Redis did not answer within {self.owner.timeout}s"))

    def fail(self, exc: Exception) -> None:
        """Close this connection for good and fail every command still pending on it."""
        if self.closed:
            return
        self.closed = True
        self.owner.forget(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.abort()
        if self.opening is not None and self.opening is not asyncio.current_task():
            self.opening.cancel()
        pending, self.pending = self.pending, deque()
        self.out.clear()
        for fut, _ in pending:
            if not fut.done():
                fut.set_exception(type(exc)(*exc.args))


class AutoPipeline:
    """The pipelined connections of one RedisLink: ``send`` picks one that has room."""

    def __init__(self, pool: aioredis.ConnectionPool, timeout: float, max_pipes: int) -> None:
        self.pool = pool
        self.timeout = timeout
        self.max_pipes = max_pipes
        self.pipes: list[Pipe] = []
        self.current: Pipe | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        """The reply to one packed command, as a future: written with the rest of this
        loop turn's commands on the same connection."""
        fut: asyncio.Future[Any] = self.loop.create_future()
        pipe = self.current
        if pipe is None or pipe.full:
            pipe = self._pick()
            if pipe is None:
                fut.set_exception(
                    RedisTimeoutError(f"Redis backlog: {len(self.pipes)} x {MAX_PENDING} pending")
                )
                return fut
        pipe.send(packed, fut)
        return fut

    def _pick(self) -> Pipe | None:
        for pipe in self.pipes:
            if not pipe.full:
                self.current = pipe
                return pipe
        if len(self.pipes) >= self.max_pipes:
            return None
        pipe = Pipe(self)
        self.pipes.append(pipe)
        self.current = pipe
        pipe.opening = self.loop.create_task(self._open(pipe))
        return pipe

    async def _open(self, pipe: Pipe) -> None:
        try:
            await pipe.open(self.pool)
        except (Exception, asyncio.CancelledError):  # its commands failed with it (Pipe.fail)
            return

    def forget(self, pipe: Pipe) -> None:
        if pipe in self.pipes:
            self.pipes.remove(pipe)
        if self.current is pipe:
            self.current = None

    def close(self) -> None:
        for pipe in list(self.pipes):
            pipe.fail(RedisConnectionError("the Redis link was closed"))
