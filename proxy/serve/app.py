"""The public listener: every request asks the current snapshot what to do, then either
streams the origin's answer back or runs the feed path."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from proxy.feed import stages
from proxy.http.limits import GuardedServer, raise_fd_limit
from proxy.outcome.ending import Ended
from proxy.outcome.errors import OriginError, Outcome
from proxy.outcome.record import RequestRecord, mark
from proxy.serve.runtime import Runtime

log = logging.getLogger("rankgate.app")


class PublicApp:
    """The request handler of the public port."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def observe(self, record: RequestRecord) -> None:
        for observer in self.runtime.observers:
            try:
                observer(record)
            except Exception:
                log.exception("observer failed")

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        rt = self.runtime
        if rt.events is not None and request.path == rt.events.path:
            return await rt.events.handle(request)  # ours: never forwarded
        record = RequestRecord(request.method, request.path)
        if rt.tracing is not None:
            rt.tracing.start(request.headers, record)
        snapshot = rt.store.current  # this request's view, whatever reloads happen
        route = snapshot.match(request.method, request.path)
        rt.in_flight += 1
        try:
            if route is None:
                return await self.pass_through(request, record)
            return await stages.handle(rt.feed, request, route, snapshot, record)
        except OriginError as exc:
            log.warning("%s %s: %s", request.method, request.path, exc.detail)
            record.outcome, record.reason = Outcome.ORIGIN_ERROR, exc.reason
            record.status = exc.status
            return exc.response()
        except Ended as exc:  # a client abort, an origin cut mid-body, our own answer
            return await exc.finish(request, record)
        finally:
            rt.in_flight -= 1
            record.timings.setdefault("total", time.perf_counter() - record.started)
            self.observe(record)

    async def pass_through(
        self, request: web.BaseRequest, record: RequestRecord
    ) -> web.StreamResponse:
        forwarder, trace = self.runtime.forwarder, record.trace
        if trace is None:
            upstream = await forwarder.open(request)
            record.status = upstream.status
            return await forwarder.stream_back(request, upstream)
        started = time.perf_counter()
        try:
            upstream = await forwarder.open(request, traceparent=trace.traceparent)
            record.status = upstream.status
            return await forwarder.stream_back(request, upstream)
        finally:
            mark(record, "origin", started)


def build_server(runtime: Runtime) -> web.Server:
    """The public listener: aiohttp's low-level server, every request to one handler.

    Every path is ours to forward, so the router, middlewares and app signals of a
    web.Application would only cost time (a large share of a trivial handler's
    throughput: docs/performance.md). No client_max_size: bodies stream to the origin.
    GuardedServer bounds what clients can hold (proxy/http/limits.py).
    """
    s = runtime.settings
    raise_fd_limit(s.listen.max_connections + s.origin.max_connections + 256)
    app = PublicApp(runtime)
    return GuardedServer(
        app.handle, s.listen, runtime.connections, max_field_size=65536, max_line_size=65536
    )
