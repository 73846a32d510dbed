"""Running rankgate: the public and admin listeners, signals, graceful shutdown.

Start-up order: admin first (so ``/healthz`` answers and ``/readyz`` says 503 while
models load), then the runtime (routes, models warmed, pools), then the public port.
Shutdown is the reverse: ``/readyz`` goes 503, the public port stops accepting,
requests in flight finish (up to ``shutdown_timeout_s``), pools close, admin last.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from collections.abc import Callable

from aiohttp import web

from proxy import logs
from proxy.admin import build_admin_app
from proxy.app import Runtime, build_server
from proxy.config import Settings
from proxy.metrics import Metrics
from proxy.routesource import routes_follower
from proxy.yamlconf import ConfigError

log = logging.getLogger("rankgate.server")

# NOTES.md: a feed parse makes ~1 000 objects, and full collections over everything
# loaded at start-up (onnxruntime, numpy, modules) made the p99. gc.freeze() takes the
# start-up heap out of collections; a larger gen-0 threshold makes young collections
# rarer. RANKGATE_GC_TUNING=0 turns it off (to measure).
GC_GEN0_THRESHOLD = 20_000


def tune_gc() -> None:
    if os.environ.get("RANKGATE_GC_TUNING", "1") == "0":
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def _bound_port(runner: web.BaseRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("listener has no TCP address")


async def _listen(runner: web.BaseRunner, what: str, host: str, port: int, reuse_port: bool) -> int:
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
    except OSError as exc:
        # A clean one-line message (exit status 2), not a traceback.
        await runner.cleanup()
        raise ConfigError(
            "rankgate serve", [f"{what}: cannot listen on {host}:{port}: {exc.strerror or exc}"]
        ) from None
    return _bound_port(runner)


class ProxyServer:
    """One serving process. ``start()`` returns once both listeners accept.

    ``admin_host``/``admin_port`` override ``settings.admin`` (a worker's private admin
    listener); ``access_sink`` sends the access log somewhere other than stdout.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        reuse_port: bool = False,
        admin_host: str | None = None,
        admin_port: int | None = None,
        access_sink: logs.Sink | None = None,
    ) -> None:
        self.settings = settings
        self.runtime = Runtime(settings)
        self.metrics = Metrics()
        self.metrics.install(self.runtime)
        access = logs.access_log(settings.logging, access_sink)
        if access is not None:
            self.runtime.observers.append(access)
        self.reuse_port = reuse_port
        self.admin_host = settings.admin.host if admin_host is None else admin_host
        self._admin_port = settings.admin.port if admin_port is None else admin_port
        self._public: web.ServerRunner | None = None
        self._admin: web.AppRunner | None = None
        self._stopped = False
        self._flusher: asyncio.Task[None] | None = None
        # Keeps the routes current: routes.yaml and its models on disk, or the versions
        # pushed to Redis with routes_source: redis (proxy/routesource.py).
        self.watcher = routes_follower(settings, self.runtime.store)
        self.port = 0
        self.admin_port = 0
        self.cold_start_s = 0.0

    async def start(self) -> None:
        await self.start_admin()
        try:
            await self.runtime.start()
            await self.start_public()
            if self.watcher is not None:
                await self.watcher.start()
        except BaseException:
            await self.stop()
            raise
        self.cold_start_s = self.metrics.set_cold_start(time.time())
        if self.metrics.multiproc_dir is not None:
            self._flusher = asyncio.create_task(self.metrics.run_flusher())

    async def start_admin(self) -> None:
        self._admin = web.AppRunner(
            build_admin_app(self.runtime, self.metrics),
            access_log=None,
            shutdown_timeout=self.settings.shutdown_timeout_s,
        )
        self.admin_port = await _listen(
            self._admin, "admin", self.admin_host, self._admin_port, self.reuse_port
        )

    async def start_public(self) -> None:
        s = self.settings
        self._public = web.ServerRunner(
            build_server(self.runtime), access_log=None, shutdown_timeout=s.shutdown_timeout_s
        )
        self.port = await _listen(
            self._public, "listen", s.listen.host, s.listen.port, self.reuse_port
        )

    async def stop(self) -> None:
        """Drain: not ready, stop accepting, let requests in flight finish, close pools."""
        if self._stopped:
            return
        self._stopped = True
        self.runtime.draining = True
        if self.watcher is not None:
            await self.watcher.stop()  # no reload may start while we drain
        if self._public is not None:
            # Closes the listener, then waits for handlers up to shutdown_timeout_s.
            await self._public.cleanup()
            self._public = None
        await self.runtime.stop()
        if self._flusher is not None:
            self._flusher.cancel()
        self.metrics.flush()  # the last requests' counts reach the shared files too
        if self._admin is not None:
            await self._admin.cleanup()
            self._admin = None


async def serve(
    settings: Settings,
    *,
    reuse_port: bool = False,
    admin_host: str | None = None,
    admin_port: int | None = None,
    role: str = "server",
    on_ready: Callable[[ProxyServer], None] | None = None,
    force_on_second_signal: bool = True,
) -> None:
    """Serve until SIGTERM/SIGINT (then drain); SIGHUP reloads routes.yaml.

    A second SIGTERM/SIGINT during the drain exits at once (a worker under a supervisor
    leaves that to the supervisor, which also gets the terminal's Ctrl-C).
    """
    server = ProxyServer(
        settings, reuse_port=reuse_port, admin_host=admin_host, admin_port=admin_port
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_stop(sig: signal.Signals) -> None:
        if stop.is_set():
            if force_on_second_signal:
                log.warning("%s again: exiting without waiting for requests", sig.name)
                os._exit(1)
            return
        log.info("%s: draining requests in flight", sig.name, extra={"event": "draining"})
        server.runtime.draining = True  # /readyz says 503 from now on
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop, sig)
    reloads: set[asyncio.Task[bool]] = set()

    def on_hup() -> None:
        task = loop.create_task(server.runtime.store.reload("sighup"))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    await server.start()
    tune_gc()
    s = settings
    what = "worker ready" if role == "worker" else "rankgate ready"
    log.info(
        "%s on %s:%d -> %s (admin %s:%d), %.2fs from process start",
        what,
        s.listen.host,
        server.port,
        s.origin.url,
        server.admin_host,
        server.admin_port,
        server.cold_start_s,
        extra={
            "event": "ready",
            "role": role,
            "port": server.port,
            "admin_port": server.admin_port,
            "cold_start_s": round(server.cold_start_s, 3),
        },
    )
    if on_ready is not None:
        on_ready(server)
    await stop.wait()
    started = time.perf_counter()
    await server.stop()
    log.info(
        "stopped after %.2fs of draining",
        time.perf_counter() - started,
        extra={"event": "stopped", "role": role},
    )
