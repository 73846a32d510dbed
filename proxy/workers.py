"""``rankgate serve --workers N``: a supervisor and N worker processes.

Each worker is a fresh interpreter (``python -m proxy.workers``, never a fork of a
process that has onnxruntime threads) with its own model sessions and pools. All of
them listen on the same public port with SO_REUSEPORT, so the kernel spreads the
connections; the supervisor also binds that port (without listening) to resolve
``port: 0`` and to keep the port while every worker is down.

The admin port is served once, by the supervisor:
  /metrics   every worker writes into a fresh PROMETHEUS_MULTIPROC_DIR (set in its
             environment, so before it imports prometheus_client); the supervisor sums
             them with a MultiProcessCollector, and marks dead workers' files.
  /healthz   the supervisor serves.
  /readyz    asks each worker's own /readyz (a private listener on 127.0.0.1:0 that
             the worker reports through a pipe); 200 when at least one worker is ready
             (a worker only listens once it is), 503 while draining.
  /admin/*   GET goes to one ready worker; other methods (reload) go to all of them.

A worker that dies is restarted (at once if it had been ready, with a growing delay if
it keeps failing at start-up). When no worker ever became ready and one exits with
status 2 (a configuration error), the supervisor gives up with status 2. SIGTERM or
SIGINT drains: SIGTERM to every worker, wait, exit 0; SIGHUP is passed on (reload).
With ``workers: 1`` none of this runs: the one process serves by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import orjson
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import mark_process_dead

from proxy.config import Settings, load_settings
from proxy.metrics import CONTENT_TYPE, MULTIPROC_ENV, render_multiprocess
from proxy.yamlconf import ConfigError

log = logging.getLogger("rankgate.workers")

REDIS_URL_ENV = "RANKGATE_REDIS_URL"  # the embedded Valkey the supervisor started
WORKER_ENV = "RANKGATE_WORKER"
MAX_RESTART_DELAY_S = 10.0
KILL_GRACE_S = 5.0  # past shutdown_timeout_s, before SIGKILL

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop where it is installed, returning the result."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def resolve_workers(configured: int) -> int:
    if configured > 0:
        return configured
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may use
    except AttributeError:
        return os.cpu_count() or 1


def serve_main(settings: Settings, config_path: str | Path) -> int:
    """``rankgate serve``: in this process for one worker, else a supervisor."""
    workers = resolve_workers(settings.workers)
    if workers == 1:
        from proxy.server import serve

        run(serve(settings))
        return 0
    return run(Supervisor(settings, Path(config_path), workers).run())


# -- the worker side -----------------------------------------------------------------


async def _watch_supervisor(life_fd: int) -> None:
    """The supervisor holds the write end of this pipe: EOF means it is gone (even after
    a SIGKILL), and a worker without a supervisor drains and exits."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(life_fd, "rb", buffering=0)
    )
    try:
        await reader.read()
    finally:
        transport.close()
    log.warning("the supervisor is gone: draining")
    os.kill(os.getpid(), signal.SIGTERM)


def worker_main(argv: list[str] | None = None) -> int:
    from proxy.logs import setup_logging
    from proxy.server import ProxyServer, serve

    parser = argparse.ArgumentParser(prog="rankgate-worker")
    parser.add_argument("--config", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--life-fd", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return 2
    update: dict[str, Any] = {"listen": settings.listen.model_copy(update={"port": args.port})}
    if os.environ.get(REDIS_URL_ENV):
        update["redis"] = settings.redis.model_copy(update={"url": os.environ[REDIS_URL_ENV]})
    settings = settings.model_copy(update=update)
    setup_logging(settings.logging)
    tasks: list[asyncio.Task[None]] = []

    def on_ready(server: ProxyServer) -> None:
        message = {"event": "ready", "pid": os.getpid(), "admin_port": server.admin_port}
        with contextlib.suppress(OSError):
            os.write(args.control_fd, orjson.dumps(message) + b"\n")
        tasks.append(asyncio.get_running_loop().create_task(_watch_supervisor(args.life_fd)))

    try:
        run(
            serve(
                settings,
                reuse_port=True,
                admin_host="127.0.0.1",
                admin_port=0,
                role="worker",
                on_ready=on_ready,
                force_on_second_signal=False,
            )
        )
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return 2
    return 0


# -- the supervisor side -------------------------------------------------------------


@dataclass
class Worker:
    index: int
    proc: asyncio.subprocess.Process | None = None
    admin_port: int | None = None
    ready: bool = False
    started: float = 0.0
    restarts: int = 0
    failures: int = 0  # exits in a row before becoming ready
    control: asyncio.ReadTransport | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


def reserve_port(host: str, port: int) -> socket.socket:
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
    return sock


class SupervisorCollector:
    """The supervisor's own series, rendered beside the workers' sums."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        sup = self.supervisor
        workers = GaugeMetricFamily(
            "rankgate_workers", "Worker processes by state.", labels=["state"]
        )
        ready = sum(1 for w in sup.workers if w.ready)
        workers.add_metric(["desired"], len(sup.workers))
        workers.add_metric(["ready"], ready)
        workers.add_metric(["alive"], sum(1 for w in sup.workers if w.alive()))
        yield workers
        yield CounterMetricFamily(
            "rankgate_worker_restarts",
            "Worker processes restarted after they exited.",
            value=sum(w.restarts for w in sup.workers),
        )


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
        self.metrics_dir = ""
        self.ever_ready = False
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()
        self._redis_url: str | None = settings.redis.url
        self._client: aiohttp.ClientSession | None = None
        self.collector = SupervisorCollector(self)
        self._tasks: set[asyncio.Task[None]] = set()
        # Workers read the other end: EOF tells them the supervisor is gone.
        self._life_read, self._life_write = -1, -1

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self) -> int:
        self.metrics_dir = tempfile.mkdtemp(prefix="rankgate-metrics-")
        self._life_read, self._life_write = os.pipe()
        try:
            return await self._run()
        finally:
            os.close(self._life_read)
            os.close(self._life_write)
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    async def _run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self._signal_workers, signal.SIGHUP)
        s = self.settings
        reserved = reserve_port(s.listen.host, s.listen.port)
        self.port = reserved.getsockname()[1]
        valkey = None
        admin: web.AppRunner | None = None
        keepers: list[asyncio.Task[None]] = []
        try:
            if self._redis_url is None:
                from proxy.valkey import EmbeddedValkey

                # One embedded Valkey for all workers: they must see the same data.
                valkey = EmbeddedValkey.for_settings(s)
                self._redis_url = await asyncio.to_thread(valkey.start)
            self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
            admin = web.AppRunner(build_supervisor_admin(self), access_log=None)
            await admin.setup()
            try:
                await web.TCPSite(admin, s.admin.host, s.admin.port).start()
            except OSError as exc:
                raise ConfigError(
                    "rankgate serve",
                    [f"admin: cannot listen on {s.admin.host}:{s.admin.port}: {exc.strerror}"],
                ) from None
            self.admin_port = next(a[1] for a in admin.addresses if isinstance(a, tuple))
            keepers = [loop.create_task(self._keep(w)) for w in self.workers]
            await self._wait_all_ready()
            if not self._stop.is_set():
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
            await self._stop.wait()
            await self._drain(keepers)
        finally:
            for task in keepers:
                task.cancel()
            for w in self.workers:
                if w.alive() and w.proc is not None:
                    with contextlib.suppress(ProcessLookupError):
                        w.proc.kill()
            if admin is not None:
                await admin.cleanup()
            if self._client is not None:
                await self._client.close()
            if valkey is not None:
                await asyncio.to_thread(valkey.stop)
            reserved.close()
        log.info("stopped", extra={"event": "stopped", "role": "supervisor"})
        return self.exit_code

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

    async def _wait_all_ready(self) -> None:
        while not self._stop.is_set() and not all(w.ready for w in self.workers):
            self._changed.clear()
            await self._changed.wait()

    async def _drain(self, keepers: list[asyncio.Task[None]]) -> None:
        self._signal_workers(signal.SIGTERM)
        timeout = self.settings.shutdown_timeout_s + KILL_GRACE_S
        procs = [w.proc.wait() for w in self.workers if w.proc is not None and w.alive()]
        if procs:
            _, pending = await asyncio.wait(
                [asyncio.ensure_future(p) for p in procs], timeout=timeout
            )
            if pending:
                log.warning("%d workers did not stop in %.0fs: killing", len(pending), timeout)
                self._signal_workers(signal.SIGKILL)
        if keepers:
            await asyncio.wait(keepers, timeout=KILL_GRACE_S)

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
            was_ready = w.ready
            w.ready, w.admin_port = False, None
            if w.control is not None:
                w.control.close()
                w.control = None
            mark_process_dead(w.proc.pid, self.metrics_dir)
            self._changed.set()
            if self._stop.is_set():
                return
            if code == 2 and not was_ready and not self.ever_ready:
                log.error(
                    "worker %d exited with a configuration error before serving: stopping",
                    w.index,
                )
                self.exit_code = 2
                self.stop()
                return
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

    async def _spawn(self, w: Worker) -> None:
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        env = {**os.environ, MULTIPROC_ENV: self.metrics_dir, WORKER_ENV: str(w.index)}
        if self._redis_url is not None and self.settings.redis.url is None:
            env[REDIS_URL_ENV] = self._redis_url
        args = [
            sys.executable,
            "-m",
            "proxy.workers",
            "--config",
            str(self.config_path),
            "--index",
            str(w.index),
            "--port",
            str(self.port),
            "--control-fd",
            str(write_fd),
            "--life-fd",
            str(self._life_read),
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

    # -- admin ---------------------------------------------------------------------------

    async def ask(
        self, w: Worker, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        """One worker's private admin answer: (status, JSON body or text)."""
        assert self._client is not None
        url = f"http://127.0.0.1:{w.admin_port}{path}"
        try:
            async with self._client.request(method, url, headers=headers, data=body) as resp:
                raw = await resp.read()
                try:
                    return resp.status, orjson.loads(raw)
                except orjson.JSONDecodeError:
                    return resp.status, raw.decode(errors="replace")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return 502, {"error": f"worker did not answer: {exc!r}"}

    def ready_workers(self) -> list[Worker]:
        return [w for w in self.workers if w.ready and w.admin_port is not None]


SUPERVISOR_KEY: web.AppKey[Supervisor] = web.AppKey("supervisor")


async def _metrics(request: web.Request) -> web.Response:
    sup = request.app[SUPERVISOR_KEY]
    # Reading every worker's files is file I/O: keep it off the loop.
    body = await asyncio.to_thread(render_multiprocess, sup.metrics_dir, [sup.collector])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def _healthz(request: web.Request) -> web.Response:
    sup = request.app[SUPERVISOR_KEY]
    return web.json_response(
        {
            "status": "ok",
            "pid": os.getpid(),
            "draining": sup.draining,
            "workers": {"desired": len(sup.workers), "alive": sum(w.alive() for w in sup.workers)},
        }
    )


async def _readyz(request: web.Request) -> web.Response:
    sup = request.app[SUPERVISOR_KEY]
    asked = sup.ready_workers()
    answers = await asyncio.gather(*(sup.ask(w, "GET", "/readyz", {}, b"") for w in asked))
    by_index = {w.index: answer for w, answer in zip(asked, answers, strict=True)}
    workers = []
    for w in sup.workers:
        status, body = by_index.get(w.index, (503, {"problems": {"worker": "starting"}}))
        workers.append({"index": w.index, "pid": w.pid, "ready": status == 200, "detail": body})
    ready_count = sum(1 for w in workers if w["ready"])
    problems: dict[str, str] = {}
    if sup.draining:
        problems["draining"] = "shutting down"
    if ready_count == 0:
        problems["workers"] = "no worker is ready"
    body = {
        "ready": not problems,
        "draining": sup.draining,
        "workers_ready": ready_count,
        "workers_desired": len(sup.workers),
        "workers": workers,
        "problems": problems,
    }
    return web.json_response(body, status=200 if not problems else 503)


async def _admin(request: web.Request) -> web.Response:
    """/admin/*: a read goes to one ready worker, anything else (reload) to all."""
    sup = request.app[SUPERVISOR_KEY]
    targets = sup.ready_workers()
    if not targets:
        return web.json_response({"error": "no worker is ready"}, status=503)
    if request.method in ("GET", "HEAD"):
        targets = targets[:1]
    headers = {k: v for k, v in request.headers.items() if k.lower() == "authorization"}
    body = await request.read()
    path = request.rel_url.raw_path_qs
    answers = await asyncio.gather(
        *(sup.ask(w, request.method, path, headers, body) for w in targets)
    )
    status = next((code for code, _ in answers if code >= 300), answers[0][0])
    first = answers[0][1]
    out: dict[str, Any] = dict(first) if isinstance(first, dict) else {"body": first}
    out["workers"] = [
        {"pid": w.pid, "status": code, "body": answer}
        for w, (code, answer) in zip(targets, answers, strict=True)
    ]
    if len(targets) == 1:
        del out["workers"]
    extra = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return web.json_response(out, status=status, headers=extra)


def build_supervisor_admin(supervisor: Supervisor) -> web.Application:
    app = web.Application()
    app[SUPERVISOR_KEY] = supervisor
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_route("*", "/admin/{tail:.*}", _admin)
    return app


if __name__ == "__main__":
    sys.exit(worker_main())
