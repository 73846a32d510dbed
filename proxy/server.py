"""Running rankgate: the public and admin listeners, signals, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from proxy.admin import build_admin_app
from proxy.app import Runtime, build_app
from proxy.config import Settings

log = logging.getLogger("rankgate.server")


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("listener has no TCP address")


class ProxyServer:
    """One serving process. ``start()`` returns once both listeners accept."""

    def __init__(self, settings: Settings, *, reuse_port: bool = False) -> None:
        self.settings = settings
        self.runtime = Runtime(settings)
        self.reuse_port = reuse_port
        self._public: web.AppRunner | None = None
        self._admin: web.AppRunner | None = None
        self.port = 0
        self.admin_port = 0

    async def start(self) -> None:
        await self.runtime.start()
        s = self.settings
        self._public = web.AppRunner(
            build_app(self.runtime), access_log=None, shutdown_timeout=s.shutdown_timeout_s
        )
        await self._public.setup()
        await web.TCPSite(
            self._public, s.listen.host, s.listen.port, reuse_port=self.reuse_port or None
        ).start()
        self.port = _bound_port(self._public)
        self._admin = web.AppRunner(build_admin_app(self.runtime), access_log=None)
        await self._admin.setup()
        await web.TCPSite(
            self._admin, s.admin.host, s.admin.port, reuse_port=self.reuse_port or None
        ).start()
        self.admin_port = _bound_port(self._admin)
        log.info(
            "rankgate serving on %s:%d -> %s (admin %s:%d)",
            s.listen.host,
            self.port,
            s.origin.url,
            s.admin.host,
            self.admin_port,
        )

    async def stop(self) -> None:
        """Drain: not ready, stop accepting, let requests in flight finish, close pools."""
        self.runtime.draining = True
        if self._public is not None:
            await self._public.cleanup()
            self._public = None
        if self._admin is not None:
            await self._admin.cleanup()
            self._admin = None
        await self.runtime.stop()


async def serve(settings: Settings, *, reuse_port: bool = False) -> None:
    """Serve until SIGTERM/SIGINT; SIGHUP reloads routes.yaml."""
    server = ProxyServer(settings, reuse_port=reuse_port)
    await server.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[bool]] = set()

    def on_hup() -> None:
        task = loop.create_task(server.runtime.store.reload("sighup"))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    await stop.wait()
    log.info("shutting down: draining requests in flight")
    await server.stop()
    log.info("stopped")
