"""Limits on client connections: every wait a client controls is bounded, and a worker
holds at most ``listen.max_connections`` of them.

aiohttp's low-level server bounds only the idle keep-alive wait (``keepalive_timeout``,
whose timer also runs while a request's headers trickle in). The rest is added here, in a
subclass of its per-connection protocol, at no cost to a client that behaves:

- headers: a new connection must send its first request's headers within
  ``header_timeout_s`` (nginx's client_header_timeout), and so must a later request from
  its first byte; else 408 (or a plain close when nothing was sent) and the connection
  is closed. Between requests the idle keep-alive wait (``keepalive_timeout_s``) applies;
- sending: when a client stops reading, the socket's buffer fills and asyncio pauses our
  writes; if they stay paused ``send_timeout_s`` (nginx's send_timeout) the connection is
  aborted, which ends the handler's next write (and frees its origin connection);
- memory: the write buffer of a connection is kept small, so a client that reads
  nothing holds little memory while it waits to be cut;
- count: past ``max_connections`` a new connection gets ``503`` with ``Retry-After`` and
  is closed, before any of its bytes are parsed;
- requests the parser refuses (400) are logged at debug level, without a traceback:
  they are the client's doing, and anyone on the internet can send them.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any, cast

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from proxy.config.settings import Listen

log = logging.getLogger("rankgate.connections")

# A paused write resumes below LOW and pauses above HIGH: 16 KiB of our own buffer per
# connection on top of the kernel's socket buffer (asyncio's default is 64 KiB).
WRITE_HIGH = 16 * 1024
WRITE_LOW = 4 * 1024
# How long a refused connection is given to read its 503 before it is closed.
REFUSE_LINGER_S = 1.0
RETRY_AFTER_S = 1


def _canned(status: str, error: str, detail: str, extra: str = "") -> bytes:
    body = orjson.dumps({"error": error, "detail": detail})
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


BUSY = _canned(
    "503 Service Unavailable",
    "too_many_connections",
    "this worker holds listen.max_connections connections; retry shortly",
    f"Retry-After: {RETRY_AFTER_S}\r\n",
)
HEADER_TIMEOUT = _canned(
    "408 Request Timeout",
    "header_timeout",
    "the request's headers did not arrive within listen.header_timeout_s",
)


class ConnectionStats:
    """Plain counters (metrics reads them at flush, like the item cache's)."""

    __slots__ = ("bad_requests", "header_timeouts", "open", "refused", "send_timeouts")

    def __init__(self) -> None:
        self.open = 0  # client connections held now
        self.refused = 0  # over max_connections: 503
        self.header_timeouts = 0
        self.send_timeouts = 0
        self.bad_requests = 0  # the parser's 400s

    def snapshot(self) -> dict[str, int]:
        return {
            "max-connections": self.refused,
            "header-timeout": self.header_timeouts,
            "send-timeout": self.send_timeouts,
            "bad-request": self.bad_requests,
        }


class _Refuse(asyncio.Protocol):
    """A connection over the cap: 503, then a short linger so the client reads it (a
    close with its request still unread would send a reset that can destroy the 503)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but act like one.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.write(BUSY)
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(REFUSE_LINGER_S, transport.abort)

    def data_received(self, data: bytes) -> None:
        pass  # read and dropped while lingering

    def eof_received(self) -> bool:
        return False  # the client is done: close now

    def connection_lost(self, exc: BaseException | None) -> None:
        self._timer.cancel()


class GuardedProtocol(RequestHandler):
    """aiohttp's per-connection protocol with the header and send timeouts."""

    __slots__ = ("_header_started", "_header_timer", "_limits", "_send_timer", "_stats", "ended_by")

    def __init__(
        self, manager: GuardedServer, *, limits: Listen, stats: ConnectionStats, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._stats = stats
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_started = False  # some bytes of the awaited request are in
        self._send_timer: asyncio.TimerHandle | None = None
        # Why we ended the connection ourselves ("send-timeout"), for the request record.
        self.ended_by: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        cast(asyncio.Transport, transport).set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
        self._stats.open += 1
        # The first request's headers are due from the connection's start, as in nginx.
        self._header_timer = self._loop.call_later(
            self._limits.header_timeout_s, self._header_timed_out
        )

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._manager is not None:  # aiohttp calls this once; later calls are no-ops
            self._stats.open -= 1
        for timer in (self._header_timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._send_timer = None
        super().connection_lost(exc)

    # -- headers ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._messages or self._request_in_progress:
            # A whole header section is in (or a body is arriving): not our wait.
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            self._header_started = False
        elif data and not self._force_close:
            # Bytes of a request whose headers are not complete yet.
            self._header_started = True
            if self._header_timer is None:
                self._header_timer = self._loop.call_later(
                    self._limits.header_timeout_s, self._header_timed_out
                )

    def _header_timed_out(self) -> None:
        self._header_timer = None
        transport = self.transport
        # Only while no request is being handled: a body the handler reads, or one
        # lingered over after the answer, is another timeout's job.
        if transport is None or self._request_in_progress or self._messages:
            return
        waiter = self._waiter
        if self._request_count and (waiter is None or waiter.done()):
            return  # between requests, past the answer: aiohttp's lingering or keep-alive
        self._stats.header_timeouts += 1
        log.debug("header timeout from %s", self.peername)
        if self._header_started:
            transport.write(HEADER_TIMEOUT)  # nothing sent at all: just close
        self.force_close()

    # -- sending ----------------------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self._loop.call_later(
                self._limits.send_timeout_s, self._send_timed_out
            )

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_timed_out(self) -> None:
        self._send_timer = None
        transport = self.transport
        if transport is None or not self.writing_paused:
            return
        self._stats.send_timeouts += 1
        self.ended_by = "send-timeout"
        log.debug("send timeout to %s", self.peername)
        # abort(), not close(): close() would wait for the client to read the buffer.
        transport.abort()

    # -- what the parser refuses ------------------------------------------------------

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)  # our bug: traceback
        self._stats.bad_requests += 1
        log.debug("bad request from %s: %s", request.remote, str(exc).replace("\n", " "))
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        resp = web.Response(status=status, text=message, content_type="text/plain")
        resp.force_close()
        return resp


class GuardedServer(web.Server):
    """web.Server whose connections are GuardedProtocols, at most max_connections."""

    def __init__(
        self, handler: Any, limits: Listen, stats: ConnectionStats | None = None, **kwargs: Any
    ) -> None:
        super().__init__(handler, keepalive_timeout=limits.keepalive_timeout_s, **kwargs)
        self.limits = limits
        self.stats = stats if stats is not None else ConnectionStats()

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def __call__(self) -> RequestHandler:  # type: ignore[override]
        if len(self._connections) >= self.limits.max_connections:
            self.stats.refused += 1
            return _Refuse()  # type: ignore[return-value]
        return GuardedProtocol(
            self, loop=self._loop, limits=self.limits, stats=self.stats, **self._kwargs
        )


def raise_fd_limit(needed: int) -> int:
    """Raise this process's open-file limit to its hard limit (like nginx's
    worker_rlimit_nofile) and warn when it is still under ``needed``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "open-file limit %d is under the %d that listen.max_connections and "
            "origin.max_connections may need: raise it (ulimit -n) or lower them",
            soft,
            needed,
        )
    return soft if soft != resource.RLIM_INFINITY else needed
