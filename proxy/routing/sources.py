"""``routes_source: redis``: every process of a fleet serves the routes pushed to Redis
(``rankgate routes push``), through the same validation and atomic swap as a file reload.

A push reaches every subscribed process in milliseconds (a ConfigMap, after the
kubelet's sync). Pub/sub can lose a message, so each process also re-reads the stored
version when its subscription (re)starts and every ``poll_s``.

Checked in this order, each before the next reads anything: size (asked of Redis before
the bytes are fetched), sha256, signature (``signing.py``; no key: no start), then YAML.
A version refused (for any reason) leaves the process on the version it serves, says so
in its log, ``/admin/routes`` and the fleet hash, and is tried again only when a new
version is pushed (or every REFUSED_RETRY_S: a model volume may catch up).

Until Redis first answers with a version (Redis down at start, or nothing pushed yet)
the process serves the ``routes:`` file if there is one, else no routes at all (every
request passes through). Relative paths in pushed routes resolve against the directory
of that ``routes:`` file, as they would for the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from proxy.config.settings import Settings
from proxy.config.yamlload import ConfigError
from proxy.routing import signing, versions
from proxy.routing.current import ReloadOutcome, SnapshotStore
from proxy.routing.limits import Deadline, RoutesPolicy
from proxy.routing.reload import RoutesWatcher
from proxy.routing.snapshot import Snapshot, build_snapshot, build_snapshot_bytes, empty_snapshot
from proxy.routing.versions import Head
from proxy.store.connect import sync_client
from proxy.store.pubsub import subscription

log = logging.getLogger("rankgate.routes")
T = TypeVar("T")

REFUSED_RETRY_S = 30.0
RECONNECT_MAX_S = 5.0
REDIS_TIMEOUT_S = 2.0  # off the request path: a slow Redis delays a reload, nothing else


def routes_follower(
    settings: Settings, store: SnapshotStore
) -> RoutesWatcher | RedisRoutesSource | None:
    """What keeps ``store`` current: the routes file's watcher, or Redis."""
    if settings.routes_source == "redis":
        return RedisRoutesSource(settings, store, fleet_key(settings))
    return RoutesWatcher(store) if settings.routes_watch else None


def fleet_key(settings: Settings) -> bytes:
    """The key routes versions are verified with; no key: a ConfigError (no start)."""
    try:
        return signing.key_from_env(settings.routes_redis.key_env)
    except signing.RoutesKeyError as exc:
        raise ConfigError("routes_redis", [str(exc)]) from None


@dataclass(frozen=True)
class Served:
    """Where the active snapshot came from."""

    kind: Literal["redis", "file", "none"]
    head: Head | None = None


@dataclass(frozen=True)
class Refusal:
    head: Head
    error: str
    at: float


class RedisRoutesSource:
    """Builds snapshots from Redis (installed as the store's builder), follows pushes,
    and reports this process in the fleet hash. ``start()``/``stop()`` like the file
    watcher."""

    def __init__(self, settings: Settings, store: SnapshotStore, key: bytes) -> None:
        assert settings.redis.url is not None  # the config refuses routes_source: redis without
        self.settings = settings
        self.key = key
        self.policy = RoutesPolicy.from_settings(settings)
        self.cfg = settings.routes_redis
        self.url = settings.redis.url
        self.store = store
        self.base_dir = settings.routes_path.parent
        self.name = _member_name()
        self.served = Served("none")
        self.refused: Refusal | None = None
        self.subscribed = False
        self.started_at = time.time()
        self.checks = 0
        self._attempt: Served | None = None
        self._sync: redis.Redis | None = None
        self._lock = threading.Lock()  # the builder's thread and the checks' threads
        self._task: asyncio.Task[None] | None = None
        self._checked = asyncio.Event()
        store.builder = self._build
        store.describe_source = self.describe
        store.listeners.append(self._on_reload)

    # -- building (blocking, in the store's thread) -------------------------------------

    def _client(self) -> redis.Redis:
        """The blocking client, made on first use (it may connect: call it in a thread)."""
        with self._lock:
            if self._sync is None:
                self._sync = sync_client(self.url, self.settings.redis.cluster, REDIS_TIMEOUT_S)
            return self._sync

    async def _redis(self, call: Callable[..., T], *args: Any) -> T:
        """``call(client, *args)`` in a thread: never a blocking Redis call on the loop."""
        return await asyncio.to_thread(lambda: call(self._client(), *args))

    def _build(self, version: int, previous: Snapshot | None, deadline: Deadline) -> Snapshot:
        self._attempt = None
        try:
            stored = versions.fetch(self._client(), self.cfg, self.policy.max_routes_bytes)
        except (RedisError, OSError) as exc:
            if previous is None:  # start-up: serve the file meanwhile
                log.error("routes_source redis: %s did not answer (%s)", self.url, exc)
                return self._fallback(version)
            raise ConfigError(f"redis key {self.cfg.key}", [f"Redis unreachable: {exc}"]) from None
        if stored is None:
            if previous is None or self.served.kind != "redis":
                return self._fallback(version)
            raise ConfigError(
                f"redis key {self.cfg.key}",
                ["no routes stored (was the key deleted?): the active version keeps serving"],
            )
        self._attempt = Served("redis", stored.head)
        label = f"redis key {self.cfg.key} version {stored.head.version}"
        self.policy.check_size(stored.size, label)
        if not stored.intact:
            raise ConfigError(
                label,
                [f"sha256: the stored routes do not hash to {stored.head.sha256}: refused"],
                reason="sha256",
            )
        problem = stored.signature_problem(self.key, self.cfg.key)
        if problem is not None:  # checked before a byte of the YAML is parsed
            raise ConfigError(label, [f"sig: {problem}"], reason="signature")
        return build_snapshot_bytes(
            stored.raw,
            label,
            self.base_dir,
            self.store.dim,
            version,
            previous,
            self.policy,
            deadline,
        )

    def _fallback(self, version: int) -> Snapshot:
        path = self.settings.routes_path
        if path.exists():
            log.warning("routes_source redis: no version from Redis yet; serving %s", path)
            self._attempt = Served("file")
            return build_snapshot(path, self.store.dim, version, None, self.policy)
        log.error(
            "routes_source redis: no version from Redis yet and no %s: no routes, every "
            "request passes through until a version is pushed",
            path,
        )
        self._attempt = Served("none")
        return replace(empty_snapshot(Path(f"redis key {self.cfg.key}")), version=version)

    def _on_reload(self, outcome: ReloadOutcome | None, snapshot: Snapshot | None) -> None:
        result = "ok" if outcome is None else outcome.result
        error = None if outcome is None else outcome.error
        attempt, self._attempt = self._attempt, None
        if attempt is None:
            return  # Redis did not answer: nothing was offered, nothing refused
        if result != "error":
            if attempt != self.served:
                log.info("routes: now serving %s", _describe(attempt))
            self.served = attempt
            self.refused = None
        elif attempt.head is not None and error is not None:
            self.refused = Refusal(attempt.head, error, time.time())
            log.error(
                "routes version %d refused; still serving %s: %s",
                attempt.head.version,
                _describe(self.served),
                error,
            )

    # -- following ----------------------------------------------------------------------

    async def start(self, ready_within_s: float = 5.0) -> None:
        if self._task is not None:
            return
        self._checked.clear()
        self._task = asyncio.create_task(self._run(), name="rankgate-routes-redis")
        # Back once this process has checked Redis and reported itself (or gave up).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._checked.wait()), ready_within_s)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(RedisError, OSError):
            await self._redis(versions.forget, self.cfg, self.name)
        if self._sync is not None:
            self._sync.close()

    async def _run(self) -> None:
        delay = 0.1
        while True:
            if not self.cfg.subscribe:
                await self._poll_forever()
            try:
                others = await self._other_nodes()
                async with subscription(self.url, self.cfg.channel, others) as pubsub:
                    self.subscribed = True
                    delay = 0.1
                    await self._check("reconnect")  # what was pushed while not listening
                    await self._listen(pubsub)
            except (RedisError, OSError) as exc:
                if self.subscribed:
                    log.warning(
                        "routes: subscription lost (%s); polling every %.1fs", exc, self.cfg.poll_s
                    )
            finally:
                self.subscribed = False
            await self._check("poll")
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def _other_nodes(self) -> list[tuple[str, int]]:
        """A cluster's nodes, to subscribe on when the configured one is down."""
        with contextlib.suppress(RedisError, OSError):
            client = await asyncio.to_thread(self._client)
            if isinstance(client, redis.RedisCluster):
                return [(n.host, int(n.port)) for n in client.get_nodes()]
        return []

    async def _poll_forever(self) -> None:
        while True:
            await self._check("poll")
            await asyncio.sleep(self.cfg.poll_s)

    async def _listen(self, pubsub: aioredis.client.PubSub) -> None:
        next_poll = time.monotonic() + self.cfg.poll_s
        while True:
            wait = max(0.0, next_poll - time.monotonic())
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
            if message is not None:
                await self._check("pubsub")
            if time.monotonic() >= next_poll:
                await self._check("poll")
                next_poll = time.monotonic() + self.cfg.poll_s

    async def _check(self, trigger: str) -> None:
        """Reload when Redis holds a version this process neither serves nor refused;
        then report. Never raises: a check that fails is retried at the next poll."""
        try:
            current = await self._redis(versions.head, self.cfg)
            if current is not None and self._wanted(current):
                await self.store.reload_outcome(f"redis-{trigger}", if_changed=True)
            await self._redis(versions.report, self.cfg, self.name, self.entry())
        except (RedisError, OSError) as exc:
            log.debug("routes check (%s) failed: %s", trigger, exc)
        except Exception:
            log.exception("routes check (%s) failed", trigger)
        finally:
            self.checks += 1
            self._checked.set()

    def _wanted(self, current: Head) -> bool:
        if current == self.served.head:
            return False
        refused = self.refused
        return not (
            refused is not None
            and refused.head == current
            and time.time() - refused.at < REFUSED_RETRY_S
        )

    # -- reporting ----------------------------------------------------------------------

    def entry(self) -> dict[str, Any]:
        served, refused = self.served, self.refused
        return {
            "version": None if served.head is None else served.head.version,
            "sha256": None if served.head is None else served.head.sha256,
            "source": served.kind,
            "snapshot_version": self.store.current.version,
            "refused": None
            if refused is None
            else {
                "version": refused.head.version,
                "sha256": refused.head.sha256,
                "error": refused.error,
            },
            "subscribed": self.subscribed,
            "pid": os.getpid(),
            "started_at": self.started_at,
        }

    async def describe(self) -> dict[str, object]:
        """For /admin/routes: this process, the stored version and the live fleet."""
        out: dict[str, object] = {
            "source": "redis",
            "key": self.cfg.key,
            "process": self.name,
            **self.entry(),
        }
        try:
            stored = await self._redis(versions.head, self.cfg)
            out["stored"] = None if stored is None else vars(stored)
            out["fleet"] = await self._redis(versions.fleet, self.cfg)
        except (RedisError, OSError) as exc:
            out["fleet_error"] = f"Redis unreachable: {exc}"
        return out


_INSTANCES = itertools.count(1)


def _member_name() -> str:
    """host:pid, and /N for a second server in one process (tests run several)."""
    n = next(_INSTANCES)
    return versions.member() + ("" if n == 1 else f"/{n}")


def _describe(served: Served) -> str:
    if served.head is not None:
        return f"version {served.head.version} (sha256 {served.head.sha256[:12]}) from Redis"
    return {"file": "the routes file", "none": "no routes"}[served.kind]
