"""Running rankgate in one process: the admin and public listeners, signals, drain.

One lifespan, entered in order and left in reverse (``contextlib.AsyncExitStack``):

    admin listener      /healthz answers, /readyz says 503 while models load
    runtime             Valkey (embedded), Redis, origin client, routes and warm models
    warm-up             one origin and one Redis connection opened, models run once,
                        sample pages' item vectors cached (proxy/serve/warmup.py: bounded,
                        fails open)
    public listener     requests are served from here on
    routes follower     reloads routes.yaml when it (or a model) changes on disk, or
                        follows the versions pushed to Redis (routes_source: redis)

Leaving it: ``/readyz`` goes 503 (draining), the watcher stops, the public port stops
accepting and requests in flight finish (up to ``shutdown_timeout_s``), the runtime's
pools close, the admin port last. Each step runs even when an earlier one failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from proxy.config.settings import Settings
from proxy.config.yamlload import ConfigError
from proxy.experiments.assignments import Assignments
from proxy.experiments.guardrails import GuardCollector
from proxy.serve import logs
from proxy.serve.admin import LocalAdmin, build_admin_app
from proxy.serve.app import build_server
from proxy.serve.metrics import Metrics
from proxy.serve.runtime import Runtime, ServingState, open_runtime
from proxy.serve.warmup import warm_up

log = logging.getLogger("rankgate.server")

# A feed parse makes ~1 000 objects, and full collections over everything loaded at
# start-up (onnxruntime, numpy, modules) made the p99 (docs/performance.md, "Measurements
# behind the code"). gc.freeze() takes the start-up heap out of collections; a
# larger gen-0 threshold makes young collections rarer. RANKGATE_GC_TUNING=0 turns it off.
GC_GEN0_THRESHOLD = 20_000


def tune_gc() -> None:
    if os.environ.get("RANKGATE_GC_TUNING", "1") == "0":
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


@contextlib.asynccontextmanager
async def listening(
    runner: web.BaseRunner, what: str, host: str, port: int, reuse_port: bool
) -> AsyncIterator[int]:
    """A listener for the lifespan; yields its bound port. ``runner.cleanup()`` on exit
    stops accepting and waits for handlers up to the runner's shutdown_timeout."""
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
        bound = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    except OSError as exc:
        await runner.cleanup()
        # A clean one-line message (exit status 2), not a traceback.
        raise ConfigError(
            "rankgate serve", [f"{what}: cannot listen on {host}:{port}: {exc.strerror or exc}"]
        ) from None
    try:
        yield int(bound)
    finally:
        await runner.cleanup()


def admin_token(settings: Settings) -> str | None:
    """admin.token, or the value of the environment variable admin.token_env (which
    must then be set: a start without the token it was told to require is refused)."""
    name = settings.admin.token_env
    if name is None:
        return settings.admin.token
    value = os.environ.get(name, "")
    if not value:
        raise ConfigError("admin.token_env", [f"{name} is not set (the admin token)"])
    return value


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
        self.state = ServingState()
        self.metrics = Metrics()
        self.assignments = Assignments()
        self.access = logs.access_log(settings.logging, access_sink)
        self.reuse_port = reuse_port
        self.admin_host = settings.admin.host if admin_host is None else admin_host
        self._admin_port = settings.admin.port if admin_port is None else admin_port
        self._stack = contextlib.AsyncExitStack()
        self.port = 0
        self.admin_port = 0
        self.cold_start_s = 0.0

    @property
    def runtime(self) -> Runtime:
        if self.state.runtime is None:
            raise RuntimeError("ProxyServer.start() was not awaited")
        return self.state.runtime

    async def start(self) -> None:
        await self.start_admin()
        await self.start_serving()

    async def start_admin(self) -> None:
        admin = LocalAdmin(self.state, self.metrics, admin_token(self.settings), self.assignments)
        runner = web.AppRunner(
            build_admin_app(admin),
            access_log=None,
            shutdown_timeout=self.settings.shutdown_timeout_s,
        )
        try:
            self.admin_port = await self._stack.enter_async_context(
                listening(runner, "admin", self.admin_host, self._admin_port, self.reuse_port)
            )
        except BaseException:
            await self.stop()
            raise

    async def start_serving(self) -> None:
        """The runtime, the public listener and the watcher, after the admin listener."""
        s, stack = self.settings, self._stack
        try:
            runtime = await stack.enter_async_context(open_runtime(s))
            self._wire(runtime)
            # Connections open and models warm before the port accepts (bounded, fails open).
            current = runtime.store.current
            await warm_up(
                runtime.forwarder,
                runtime.embeddings,
                list(current.models.values()),
                routes=list(current.routes),
                max_bytes=s.feed.max_body_bytes,
            )
            public = web.ServerRunner(
                build_server(runtime), access_log=None, shutdown_timeout=s.shutdown_timeout_s
            )
            self.port = await stack.enter_async_context(
                listening(public, "listen", s.listen.host, s.listen.port, self.reuse_port)
            )
            follower = runtime.follower
            if follower is not None:
                await follower.start()
                stack.push_async_callback(follower.stop)  # no reload may start while we drain
        except BaseException:
            await self.stop()
            raise
        self.state.ready_at = time.time()
        self.cold_start_s = self.metrics.set_cold_start(self.state.ready_at)

    def _wire(self, runtime: Runtime) -> None:
        """Data flows one way: the request path and the store tell metrics and logs."""
        self.state.runtime = runtime
        runtime.observers.append(self.metrics.observe)
        runtime.observers.append(self.assignments.observe)
        if self.access is not None:
            runtime.observers.append(self.access)
        cache, queue, events = runtime.embeddings.cache, runtime.exposures, runtime.events
        self.metrics.cache_counts = lambda: (cache.hits, cache.misses)
        self.metrics.cache_bytes = lambda: cache.nbytes
        self.metrics.shadow_stats = runtime.shadow_stats
        connections = runtime.connections
        self.metrics.connections = lambda: (connections.open, connections.snapshot())
        if queue is not None:
            self.metrics.sink_counts = lambda: (queue.written, queue.dropped)
        if events is not None:
            self.metrics.event_counts = lambda: events.counts
            self.metrics.feedback_counts = lambda: events.feedback
        if runtime.guard is not None:
            self.metrics.registry.register(GuardCollector(runtime.guard))
        runtime.store.listeners.append(self.metrics.on_reload)
        self.metrics.on_reload(None, runtime.store.current)

    async def stop(self) -> None:
        """Drain: not ready, stop accepting, let requests in flight finish, close pools.
        Bounded as the process's watchdog is (``serve``), for a server run in-process
        (the demo, tests): a part still closing past it is abandoned, the others still
        close, and the log names the tasks that were waiting."""
        self.state.draining = True
        bound = self.settings.shutdown_timeout_s + EXIT_MARGIN_S
        closing = asyncio.create_task(self._stack.aclose(), name="rankgate-stop")
        # Where each task waits is logged just before the bound cancels the stuck part.
        report = asyncio.get_running_loop().call_later(bound, _log_waiting, bound)
        try:
            await asyncio.wait_for(closing, bound + 0.1)
        except TimeoutError:
            if not closing.cancelled():
                raise
        finally:
            report.cancel()


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
        server.state.draining = True  # /readyz says 503 from now on
        stop.set()
        exit_by_deadline(settings.shutdown_timeout_s + EXIT_MARGIN_S)

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
    _log_ready(server, role)
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


# Past the drain (shutdown_timeout_s) this long for pools to close; then the process
# exits whatever a thread is doing (an interpreter exit joins non-daemon threads, and a
# thread stuck in a read would hold it forever).
EXIT_MARGIN_S = 5.0


def _where(coro: Any) -> str:
    """The await chain of a suspended coroutine, outermost first (``Task.get_stack``
    gives only its outermost frame)."""
    frames = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
        if frame is not None:
            frames.append(f"{frame.f_code.co_filename}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
    return " -> ".join(frames)


def _log_waiting(bound: float) -> None:
    tasks = asyncio.all_tasks()
    out = [f"  {t.get_name()}: {_where(t.get_coro()) or t.get_coro()!r}" for t in tasks]
    log.error("stopping took over %.0f s: abandoned; tasks waiting:\n%s", bound, "\n".join(out))


def exit_by_deadline(seconds: float) -> None:
    """A daemon thread that ends the process ``seconds`` from now if it is still here."""

    def watchdog() -> None:
        time.sleep(seconds)
        log.error("still running %.1fs after SIGTERM: exiting now", seconds)
        logging.shutdown()
        os._exit(1)

    threading.Thread(target=watchdog, name="rankgate-exit", daemon=True).start()


def _log_ready(server: ProxyServer, role: str) -> None:
    s = server.settings
    log.info(
        "%s on %s:%d -> %s (admin %s:%d), %.2fs from process start",
        "worker ready" if role == "worker" else "rankgate ready",
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
