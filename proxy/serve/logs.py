"""Logs: one access line per request on stdout, application logs on stderr, both in the
same format (``logging.format``: ``json`` for machines, ``text`` for a terminal).

JSON lines are written with one ``os.write`` each: several worker processes share the
same stdout, and a write of up to PIPE_BUF bytes to a pipe is never interleaved.
User ids are never logged raw: ``user`` is the first 16 hex digits of
HMAC-SHA256(key, ``logging.user_hash_salt`` + id), enough to follow one user through the
logs and useless to anyone without the key (an unkeyed hash of a numeric id is reversed by
trying them all). The key is derived from ``logging.user_hash_key_env`` (the token key by
default) with a label of its own; without that variable, a random key made once per run
(the supervisor's, inherited by its workers), so hashes then match within a run only.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
import traceback
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from proxy.config.settings import Logging
from proxy.experiments.tokens import MIN_KEY_BYTES, USER_HASH_LABEL, derive_key
from proxy.outcome.record import RequestRecord

ACCESS_LOGGER = "rankgate.access"
# Long paths are cut so that one line stays one atomic pipe write (PIPE_BUF is 4096).
MAX_PATH = 1024
# The user-hash memo: how many ids, and the longest id it keeps.
MAX_MEMO_USERS = 4096
MAX_MEMO_ID = 128
_STAGES = ("origin", "redis", "inference", "rerank")
# LogRecord attributes that are not "extra" fields.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class Sink(Protocol):
    def write(self, data: bytes) -> Any: ...


class FdSink:
    """Unbuffered lines to a file descriptor (1 = stdout, 2 = stderr)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: bytes) -> None:
        # A reader that is gone or full must not take the proxy down. (try, not
        # contextlib.suppress: a line per request, and a try costs nothing when not raised.)
        try:
            while data:
                data = data[os.write(self.fd, data) :]
        except (BlockingIOError, BrokenPipeError):
            pass


class _Clock:
    """ISO 8601 UTC timestamps with milliseconds; the per-second prefix is cached, and
    the last stamp (under load, several requests end in one millisecond)."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""
        self._milli = -1
        self._stamp = ""

    def iso(self, now: float) -> str:
        milli = int(now * 1000)
        if milli == self._milli:
            return self._stamp
        second, frac = divmod(milli, 1000)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        self._milli, self._stamp = milli, f"{self._prefix}.{frac:03d}Z"
        return self._stamp


RUN_KEY_ENV = "RANKGATE_RUN_USER_HASH_KEY"  # set once per run, inherited by workers


def user_hash_key(env_name: str = "RANKGATE_TOKEN_KEY") -> bytes:
    """The access log's key: derived from the variable's value, else the run's own."""
    value = os.environ.get(env_name, "").encode()
    if len(value) < MIN_KEY_BYTES:
        run = os.environ.get(RUN_KEY_ENV, "")
        if len(run) < 2 * MIN_KEY_BYTES:
            run = os.environ[RUN_KEY_ENV] = os.urandom(32).hex()
        value = run.encode()
    return derive_key(value, USER_HASH_LABEL)


def hash_user(user_id: str, key: bytes, salt: str = "") -> str:
    return hmac.new(key, f"{salt}{user_id}".encode(), hashlib.sha256).hexdigest()[:16]


class AccessLog:
    """A RequestRecord observer: one line per request."""

    def __init__(
        self,
        fmt: str = "json",
        sink: Sink | None = None,
        user_salt: str = "",
        user_key: bytes | None = None,
    ) -> None:
        self.json = fmt == "json"
        self.sink = sink if sink is not None else FdSink(1)
        self.user_salt = user_salt
        self.user_key = user_key if user_key is not None else user_hash_key()
        self.pid = os.getpid()
        self.clock = _Clock()
        self._users: dict[str, str] = {}

    def _user(self, user_id: str) -> str:
        # The same users come back: remember a few thousand hashes (~1 us each). Ids come
        # from clients (up to a 64 KiB header): only short ones are kept, so the memo
        # stays under ~1.5 MB whatever is sent.
        hashed = self._users.get(user_id)
        if hashed is None:
            hashed = hash_user(user_id, self.user_key, self.user_salt)
            if len(user_id) <= MAX_MEMO_ID:
                if len(self._users) >= MAX_MEMO_USERS:
                    self._users.clear()
                self._users[user_id] = hashed
        return hashed

    def fields(self, record: RequestRecord, now: float | None = None) -> dict[str, Any]:
        # Milliseconds to the microsecond, half up (``round(v * 1000, 3)`` costs ~4x).
        timings_ms = {k: int(v * 1_000_000 + 0.5) / 1000 for k, v in record.timings.items()}
        path = record.path if len(record.path) <= MAX_PATH else record.path[:MAX_PATH] + "..."
        return {
            "time": self.clock.iso(time.time() if now is None else now),
            "level": "info",
            "logger": ACCESS_LOGGER,
            "pid": self.pid,
            "method": record.method,
            "path": path,
            "status": record.status,
            "route": record.route,
            "outcome": record.outcome,
            "reason": record.reason,
            "plugin": record.plugin,  # the plugin behind a skip
            "model": record.model,
            "arm": record.arm,
            "user": self._user(record.user_id) if record.user_id else None,
            "items": record.items,
            "scored": record.scored,
            "bytes": record.bytes_out,
            "duration_ms": timings_ms.get("total", 0.0),
            "timings_ms": timings_ms,
        }

    def __call__(self, record: RequestRecord) -> None:
        fields = self.fields(record)
        if self.json:
            line = orjson.dumps(fields, option=orjson.OPT_APPEND_NEWLINE)
        else:
            line = (text_access_line(fields) + "\n").encode()
        self.sink.write(line)


def text_access_line(f: dict[str, Any]) -> str:
    """``12:00:00.123Z GET /api/feed 200 home-feed applied model=v1 ... 1.93ms (...)``."""
    parts = [f["time"], f["method"], f["path"], str(f["status"]), f["route"] or "-", f["outcome"]]
    if f["reason"]:
        parts.append(f"reason={f['reason']}")
    if f["plugin"]:
        parts.append(f"plugin={f['plugin']}")
    if f["model"]:
        parts.append(f"model={f['model']} arm={f['arm']}")
    if f["items"]:
        parts.append(f"items={f['items']} scored={f['scored']}")
    if f["bytes"] is not None:
        parts.append(f"bytes={f['bytes']}")
    if f["user"]:
        parts.append(f"user={f['user']}")
    parts.append(f"{f['duration_ms']:.2f}ms")
    stages = [f"{k} {v:.2f}" for k, v in f["timings_ms"].items() if k in _STAGES]
    if stages:
        parts.append(f"({', '.join(stages)})")
    return " ".join(parts)


class JsonFormatter(logging.Formatter):
    """Application logs as one JSON object per line, extras included as fields."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = _Clock()

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": self.clock.iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.stack_info:
            out["stack"] = record.stack_info
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self.clock = _Clock()

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={v}"
            for k, v in record.__dict__.items()
            if k not in _STANDARD and not k.startswith("_")
        )
        line = (
            f"{self.clock.iso(record.created)} {record.levelname:<7} "
            f"{record.name}[{record.process}]: "
            f"{record.getMessage()}"
        )
        if extras:
            line += f" [{extras}]"
        if record.exc_info:
            line += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return line


class SinkHandler(logging.Handler):
    """Writes each formatted record with one write: lines from workers never mix."""

    def __init__(self, sink: Sink) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.write((self.format(record) + "\n").encode())
        except Exception:
            self.handleError(record)


def setup_logging(config: Logging, sink: Sink | None = None) -> None:
    """Application logs (root logger) to stderr in the configured format and level."""
    handler = SinkHandler(sink if sink is not None else FdSink(2))
    handler.setFormatter(JsonFormatter() if config.format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(config.level.upper())
    # aiohttp's own access logger stays off: ours carries the route and timings.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # A dependency's warnings.warn() goes through the same handler (logger py.warnings):
    # printed raw, it would break the JSON lines on stderr.
    logging.captureWarnings(True)


def access_log(config: Logging, sink: Sink | None = None) -> AccessLog | None:
    """The access-log observer the config asks for, or None when it is off."""
    if not config.access_log:
        return None
    key = user_hash_key(config.user_hash_key_env)
    return AccessLog(config.format, sink, config.user_hash_salt, key)
