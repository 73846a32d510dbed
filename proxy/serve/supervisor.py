"""``rankgate serve --workers N``: a supervisor and N worker processes (``proxy.serve.worker``).

All workers listen on the same public port with SO_REUSEPORT, so the kernel spreads
the connections; the supervisor also binds that port (without listening) to resolve
``port: 0`` and to keep the port while every worker is down. The admin port is served
once, by the supervisor (``proxy.serve.fleet``).

A worker that dies is restarted (at once if it had been ready, with a growing delay if
it keeps failing at start-up). When no worker ever became ready and one exits with
status 2 (a configuration error), the supervisor gives up with status 2. SIGTERM or
SIGINT drains: SIGTERM to every worker, wait, exit 0; SIGHUP is passed on (reload).
With ``workers: 1`` none of this runs: the one process serves by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
from aiohttp import web

from proxy.config.settings import Settings
from proxy.config.yamlload import ConfigError
from proxy.routing.sources import fleet_key
from proxy.serve.admin import build_admin_app
from proxy.serve.fleet import FleetAdmin, Worker
from proxy.serve.logs import user_hash_key
from proxy.serve.runtime import embedded_valkey
from proxy.serve.server import admin_token, listening
from proxy.serve.worker import REDIS_URL_ENV, WORKER_ENV

log = logging.getLogger("rankgate.supervisor")

MAX_RESTART_DELAY_S = 10.0
KILL_GRACE_S = 5.0  # past shutdown_timeout_s, before SIGKILL
# Workers' metrics are also scraped this often, so a worker killed outright loses at
# most this much of its counts from the fleet's sums.
METRICS_REFRESH_S = 5.0


def resolve_workers(configured: int) -> int:
    if configured > 0:
        return configured
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may use
    except AttributeError:
        return os.cpu_count() or 1


@contextlib.contextmanager
def reserved_port(host: str, port: int) -> Iterator[socket.socket]:
    """Bind (without listening) with SO_REUSEPORT: resolves port 0 and holds the port."""
    family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            "rankgate serve", [f"listen: cannot listen on {host}:{port}: {exc.strerror or exc}"]
        ) from None
    with sock:
        yield sock


@contextlib.contextmanager
def life_pipe() -> Iterator[tuple[int, int]]:
    """Workers read one end: EOF tells them the supervisor is gone (even after SIGKILL)."""
    read_fd, write_fd = os.pipe()
    try:
        yield read_fd, write_fd
    finally:
        os.close(read_fd)
        os.close(write_fd)


class Supervisor:
    def __init__(self, settings: Settings, config_path: Path, workers: int) -> None:
        self.settings = settings
        self.config_path = config_path.resolve()
        self.workers = [Worker(i) for i in range(workers)]
        self.draining = False
        self.exit_code = 0
        self.port = 0
        self.admin_port = 0
        self.started_at = time.time()
        self.ever_ready = False
        self.fleet = FleetAdmin(self, admin_token(settings))
        if settings.routes_source == "redis":
            fleet_key(settings)  # no key: refused here, not by every worker in a loop
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()
        self._redis_url: str | None = settings.redis.url
        self._tasks: set[asyncio.Task[None]] = set()
        self._life_read = -1

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self) -> int:
        # Made before any worker starts, so all of them hash users with the same key.
        user_hash_key(self.settings.logging.user_hash_key_env)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self._signal_workers, signal.SIGHUP)
        async with self._lifespan():
            await self._wait_all_ready()
            if not self._stop.is_set():
                self._log_ready()
            await self._stop.wait()
            await self._drain()
        log.info("stopped", extra={"event": "stopped", "role": "supervisor"})
        return self.exit_code

    @contextlib.asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        """Port, life pipe, Valkey, admin, then the worker slots; left in reverse."""
        s = self.settings
        async with contextlib.AsyncExitStack() as stack:
            self.port = stack.enter_context(
                reserved_port(s.listen.host, s.listen.port)
            ).getsockname()[1]
            self._life_read, _ = stack.enter_context(life_pipe())
            if self._redis_url is None:
                # One embedded Valkey for all workers: they must see the same data.
                self._redis_url = await stack.enter_async_context(embedded_valkey(s))
            await stack.enter_async_context(self.fleet)
            runner = web.AppRunner(build_admin_app(self.fleet), access_log=None)
            self.admin_port = await stack.enter_async_context(
                listening(runner, "admin", s.admin.host, s.admin.port, False)
            )
            stack.callback(self._kill_remaining)
            keepers = [asyncio.create_task(self._keep(w)) for w in self.workers]
            keepers.append(asyncio.create_task(self._refresh_metrics()))
            stack.callback(lambda: [task.cancel() for task in keepers])
            yield

    def _log_ready(self) -> None:
        s = self.settings
        log.info(
            "rankgate ready on %s:%d -> %s (admin %s:%d), %d workers, %.2fs",
            s.listen.host,
            self.port,
            s.origin.url,
            s.admin.host,
            self.admin_port,
            len(self.workers),
            time.time() - self.started_at,
            extra={
                "event": "ready",
                "role": "supervisor",
                "port": self.port,
                "admin_port": self.admin_port,
                "workers": [w.pid for w in self.workers],
            },
        )

    def _on_stop(self, sig: signal.Signals) -> None:
        if self._stop.is_set():
            log.warning("%s again: killing the workers", sig.name)
            self._signal_workers(signal.SIGKILL)
            return
        log.info("%s: draining the workers", sig.name, extra={"event": "draining"})
        self.stop()

    def stop(self) -> None:
        self.draining = True
        self._stop.set()
        self._changed.set()

    def _signal_workers(self, sig: signal.Signals) -> None:
        for w in self.workers:
            if w.alive() and w.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(sig)

    def _kill_remaining(self) -> None:
        self._signal_workers(signal.SIGKILL)

    async def _wait_all_ready(self) -> None:
        while not self._stop.is_set() and not all(w.ready for w in self.workers):
            self._changed.clear()
            await self._changed.wait()

    async def _drain(self) -> None:
        self._signal_workers(signal.SIGTERM)
        timeout = self.settings.shutdown_timeout_s + KILL_GRACE_S
        waits = [asyncio.ensure_future(w.proc.wait()) for w in self.workers if w.alive() and w.proc]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=timeout)
            if pending:
                log.warning("%d workers did not stop in %.0fs: killing", len(pending), timeout)
                self._signal_workers(signal.SIGKILL)

    async def _refresh_metrics(self) -> None:
        while True:
            await asyncio.sleep(METRICS_REFRESH_S)
            await self.fleet.refresh()

    # -- one worker slot -----------------------------------------------------------------

    async def _keep(self, w: Worker) -> None:
        """Run slot ``w`` until the supervisor stops: start it, restart it when it dies."""
        delay = 0.0
        while not self._stop.is_set():
            if delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                if self._stop.is_set():
                    return
            try:
                await self._spawn(w)
            except OSError:
                log.exception("cannot start worker %d", w.index)
                w.failures += 1
                delay = min(MAX_RESTART_DELAY_S, 0.5 * 2**w.failures)
                continue
            assert w.proc is not None
            if self._stop.is_set():  # started while the drain began: drain it too
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(signal.SIGTERM)
            code = await w.proc.wait()
            delay = self._exited(w, code)
            if delay is None:
                return

    def _exited(self, w: Worker, code: int) -> float | None:
        """Book-keeping for a worker that exited: the delay before its restart, or None
        when the slot stops."""
        assert w.proc is not None
        was_ready = w.ready
        w.ready, w.admin_port = False, None
        if w.control is not None:
            w.control.close()
            w.control = None
        self.fleet.retire(w.proc.pid)
        self._changed.set()
        if self._stop.is_set():
            return None
        if code == 2 and not was_ready and not self.ever_ready:
            log.error(
                "worker %d exited with a configuration error before serving: stopping", w.index
            )
            self.exit_code = 2
            self.stop()
            return None
        w.failures = 0 if was_ready else w.failures + 1
        delay = 0.0 if was_ready else min(MAX_RESTART_DELAY_S, 0.5 * 2 ** (w.failures - 1))
        w.restarts += 1
        log.warning(
            "worker %d (pid %d) exited with status %s after %.1fs; restarting%s",
            w.index,
            w.proc.pid,
            code,
            time.monotonic() - w.started,
            f" in {delay:.1f}s" if delay else "",
            extra={"event": "worker-exit", "worker": w.index, "status": code},
        )
        return delay

    async def _spawn(self, w: Worker) -> None:
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        env = {**os.environ, WORKER_ENV: str(w.index)}
        if self._redis_url is not None and self.settings.redis.url is None:
            env[REDIS_URL_ENV] = self._redis_url
        args = [
            *(sys.executable, "-m", "proxy.serve.worker", "--config", str(self.config_path)),
            *("--index", str(w.index), "--port", str(self.port)),
            *("--control-fd", str(write_fd), "--life-fd", str(self._life_read)),
        ]
        try:
            w.proc = await asyncio.create_subprocess_exec(
                *args, pass_fds=(write_fd, self._life_read), env=env
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        w.started = time.monotonic()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
        )
        w.control = transport
        self._tasks.add(task := loop.create_task(self._read_control(w, reader)))
        task.add_done_callback(self._tasks.discard)

    async def _read_control(self, w: Worker, reader: asyncio.StreamReader) -> None:
        pid = w.pid
        while line := await reader.readline():
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if message.get("event") == "ready" and w.pid == pid:
                w.admin_port = int(message["admin_port"])
                w.ready = self.ever_ready = True
                w.failures = 0
                self._changed.set()
                log.debug("worker %d (pid %s) ready", w.index, pid)


def serve_fleet(settings: Settings, config_path: str | Path, workers: int) -> int:
    from proxy.serve.eventloop import run

    return run(Supervisor(settings, Path(config_path), workers).run())
