"""Bounds on what a routes version can make a process do: read, hash, load, import.

A routes version may come from anyone who can write the routes file or the Redis key, so
nothing it names is trusted to be small, finite or quick: a model path must be a regular
file within ``models.max_bytes`` (``/dev/zero`` or a FIFO would be read forever), the
routes bytes, model count and route count are capped before any work, and a whole reload
runs under a deadline (``routes_limits.reload_timeout_s``) on a daemon thread that the
process never waits for at exit. The limits live in rankgate.yaml, never in routes.yaml.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from proxy.config import yamlload

if TYPE_CHECKING:
    from proxy.config.settings import Settings

T = TypeVar("T")
_CHUNK = 1 << 20


class ReloadTimeout(Exception):
    """A reload ran past its bound: abandoned, reported like any refused version."""


@dataclass(frozen=True)
class RoutesPolicy:
    """What rankgate.yaml allows a routes version (defaults: rankgate.yaml's)."""

    max_routes_bytes: int = 1024 * 1024
    max_models: int = 100
    max_routes: int = 1000
    max_model_bytes: int = 512 * 1024 * 1024
    reload_timeout_s: float = 120.0
    plugin_paths: tuple[Path, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> RoutesPolicy:
        limits = settings.routes_limits
        return cls(
            max_routes_bytes=limits.max_bytes,
            max_models=limits.max_models,
            max_routes=limits.max_routes,
            max_model_bytes=settings.models.max_bytes,
            reload_timeout_s=limits.reload_timeout_s,
            plugin_paths=settings.plugin_paths,
        )

    def check_size(self, raw_size: int, source: str) -> None:
        """Before any parsing: a routes version over routes_limits.max_bytes is refused."""
        if raw_size > self.max_routes_bytes:
            raise yamlload.ConfigError(
                source,
                [
                    f"{raw_size} bytes: over routes_limits.max_bytes ({self.max_routes_bytes}) "
                    "in rankgate.yaml: refused unread"
                ],
                reason="limit",
            )

    def check_counts(self, doc: object, source: str) -> None:
        """After parsing, before validating: too many models or routes is refused."""
        if not isinstance(doc, dict):
            return
        problems = []
        for key, limit, name in (
            ("models", self.max_models, "max_models"),
            ("routes", self.max_routes, "max_routes"),
        ):
            value = doc.get(key)
            if isinstance(value, dict | list) and len(value) > limit:
                problems.append(
                    f"{key}: {len(value)} entries: over routes_limits.{name} ({limit}) "
                    "in rankgate.yaml"
                )
        if problems:
            raise yamlload.ConfigError(source, problems, reason="limit")


DEFAULT_POLICY = RoutesPolicy()


class Deadline:
    """A point in time a reload must not pass; ``abandon()`` ends it at once."""

    def __init__(self, seconds: float | None) -> None:
        self.at = None if seconds is None else time.monotonic() + seconds
        self.abandoned = threading.Event()

    def check(self, doing: str) -> None:
        if self.abandoned.is_set() or (self.at is not None and time.monotonic() > self.at):
            raise ReloadTimeout(f"ran out of time {doing}")


NO_DEADLINE = Deadline(None)


def model_file_problem(path: Path, max_bytes: int) -> str | None:
    """Why ``path`` cannot be a model (None: a regular file within the size limit)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"file not found: {path}"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    return _stat_problem(st, path, max_bytes)


def _stat_problem(st: os.stat_result, path: Path, max_bytes: int) -> str | None:
    if not stat.S_ISREG(st.st_mode):
        return f"not a regular file: {path} (devices, FIFOs and sockets are refused)"
    if st.st_size > max_bytes:
        return f"{path}: {st.st_size} bytes: over models.max_bytes ({max_bytes}) in rankgate.yaml"
    return None


def read_routes_file(path: Path, policy: RoutesPolicy) -> bytes:
    """A routes file's bytes, refused unread when over routes_limits.max_bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise yamlload.ConfigError(str(path), ["file not found"]) from None
    except OSError as exc:
        raise yamlload.ConfigError(str(path), [f"cannot read: {exc.strerror}"]) from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise yamlload.ConfigError(str(path), ["not a regular file"])
        policy.check_size(st.st_size, str(path))
        raw = fh.read(policy.max_routes_bytes + 1)
    policy.check_size(len(raw), str(path))
    return raw


def read_model_file(
    path: Path, max_bytes: int, deadline: Deadline = NO_DEADLINE, *, keep: bool = True
) -> tuple[bytes, str]:
    """(bytes, sha256) of a model file, or OSError/ValueError saying why not. Opened
    without blocking (a FIFO swapped in after a stat cannot hang the open), checked on
    the open descriptor, read in chunks with the deadline checked between them, and
    never past max_bytes + 1 (a file that grows while read is refused). ``keep=False``:
    hash only (the bytes returned are empty)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb", buffering=0) as fh:
        problem = _stat_problem(os.fstat(fd), path, max_bytes)
        if problem is not None:
            raise ValueError(problem)
        digest, parts, total = hashlib.sha256(), [], 0
        while True:
            deadline.check(f"reading {path}")
            chunk = fh.read(_CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if total > max_bytes:
                raise ValueError(f"{path}: grew past models.max_bytes ({max_bytes}) while read")
            digest.update(chunk)
            if keep:
                parts.append(chunk)
    return b"".join(parts), digest.hexdigest()


def model_digest(path: Path, max_bytes: int, stat_text: str) -> str:
    """For the file watcher: the sha256 of a model file, "missing" when unreadable, and
    for a file a reload would refuse unread (a device, too large) its stat instead."""
    problem = model_file_problem(path, max_bytes)
    if problem is not None:
        return f"refused:{stat_text}:{problem}"
    try:
        return read_model_file(path, max_bytes, keep=False)[1]
    except (OSError, ValueError):
        return "missing"


async def run_bounded(fn: Callable[[Deadline], T], timeout_s: float, name: str) -> T:
    """``fn(deadline)`` on a daemon thread, awaited at most ``timeout_s``. Past it the
    deadline is abandoned (``fn`` stops at its next check) and ReloadTimeout is raised;
    the thread is never joined, so a stuck one can neither wedge the next reload nor keep
    the process from exiting."""
    deadline = Deadline(timeout_s)
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def work() -> None:
        # An abandoned build's result has no taker (its future is already cancelled).
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            try:
                result = fn(deadline)
            except Exception as exc:  # handed to the awaiting coroutine
                future.set_exception(exc)
            except BaseException as exc:  # a plugin's sys.exit() must not end the process
                future.set_exception(RuntimeError(f"the reload raised {exc!r}"))
            else:
                future.set_result(result)

    threading.Thread(target=work, name=name, daemon=True).start()
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
    except TimeoutError:
        deadline.abandoned.set()
        raise ReloadTimeout(
            f"abandoned after {timeout_s:g}s (routes_limits.reload_timeout_s in rankgate.yaml)"
        ) from None
    finally:
        deadline.abandoned.set()
