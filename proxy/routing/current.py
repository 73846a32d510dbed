"""The routes snapshot being served, and swapping in new ones (reloads).

Requests read ``store.current`` once and keep that object; a reload builds a whole new
snapshot off the event loop and swaps one reference, only when all of it is good.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from proxy.config import yamlload
from proxy.routing.limits import (
    DEFAULT_POLICY,
    Deadline,
    ReloadTimeout,
    RoutesPolicy,
    run_bounded,
)
from proxy.routing.snapshot import (
    Snapshot,
    build_snapshot,
    empty_snapshot,
    ensure_releaser,
)

log = logging.getLogger("rankgate.snapshot")

RESULTS = ("ok", "unchanged", "error")


@dataclass(frozen=True)
class ReloadOutcome:
    result: str  # ok: swapped in | unchanged: same content, nothing to do | error: refused
    trigger: str  # watch, poll, sighup, admin, ...
    version: int  # the active version after the attempt
    error: str | None
    seconds: float
    at: float
    # Why a refused version was refused (a metric label): invalid | limit | signature |
    # sha256 | timeout | error.
    reason: str | None = None


# (the attempt's outcome, or None for the initial load; the snapshot now active, or None
# when the attempt was refused). Called on the event loop after every reload attempt.
ReloadListener = Callable[["ReloadOutcome | None", "Snapshot | None"], None]


class SnapshotStore:
    """Holds the current snapshot and swaps in new ones; reloads are serialized."""

    def __init__(self, path: Path, dim: int, policy: RoutesPolicy = DEFAULT_POLICY) -> None:
        self.path = path
        self.dim = dim
        self.policy = policy
        self.current: Snapshot = empty_snapshot(path)
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_reload_at: float | None = None
        self.last_outcome: ReloadOutcome | None = None
        # Reload attempts by result (not the initial load): rankgate_reloads_total{result}.
        self.reload_counts: dict[str, int] = dict.fromkeys(RESULTS, 0)
        # How file changes reach us, set by the watcher: events | poll | off.
        self.watch_mode = "off"
        self.listeners: list[ReloadListener] = []
        # routes_source: redis (proxy/routing/sources.py) replaces how a snapshot is built
        # (blocking, in a thread: (version, previous, deadline) -> Snapshot, or
        # ConfigError) and adds what /admin/routes shows about the fleet.
        self.builder: Callable[[int, Snapshot | None, Deadline], Snapshot] = self._build_file
        self.describe_source: Callable[[], Awaitable[dict[str, object]]] | None = None
        self._lock = asyncio.Lock()
        self._reason: str | None = None
        ensure_releaser()

    def _build_file(self, version: int, previous: Snapshot | None, deadline: Deadline) -> Snapshot:
        return build_snapshot(self.path, self.dim, version, previous, self.policy, deadline)

    @property
    def ready(self) -> bool:
        return self.current.version > 0

    def load_initial(self) -> Snapshot:
        """First load at start-up; an error here is fatal (raised to the CLI)."""
        return self._installed(self.builder(1, None, Deadline(self.policy.reload_timeout_s)))

    async def load_initial_bounded(self) -> Snapshot:
        """load_initial on a daemon thread, within routes_limits.reload_timeout_s."""
        try:
            built = await run_bounded(
                lambda d: self.builder(1, None, d), self.policy.reload_timeout_s, "rankgate-load"
            )
        except ReloadTimeout as exc:
            raise yamlload.ConfigError(str(self.path), [f"first load {exc}"]) from None
        return self._installed(built)

    def _installed(self, snapshot: Snapshot) -> Snapshot:
        self.current = snapshot
        self.last_reload_at = time.time()
        self._notify(None, self.current)
        return self.current

    async def reload(self, trigger: str = "manual") -> bool:
        """Reload (SIGHUP, admin); True unless the files were refused."""
        return (await self.reload_outcome(trigger)).result != "error"

    async def reload_outcome(
        self, trigger: str = "manual", *, if_changed: bool = False
    ) -> ReloadOutcome:
        """Build a new snapshot off the loop; swap it in only if all of it is good.

        ``if_changed`` (the file watcher): keep the active snapshot, result "unchanged",
        when routes.yaml and the models hash the same. An explicit reload always swaps,
        since plugins may read files of their own (a JWT key_file) that no hash covers.
        """
        async with self._lock:
            started = time.perf_counter()
            snapshot, error = await self._build(trigger)
            outcome = self._settle(snapshot, error, trigger, if_changed, started)
            self._notify(outcome, None if error else self.current)
            return outcome

    async def _build(self, trigger: str) -> tuple[Snapshot | None, str | None]:
        snapshot, error, self._reason = await self._attempt_build(trigger)
        return snapshot, error

    async def _attempt_build(self, trigger: str) -> tuple[Snapshot | None, str | None, str | None]:
        """The next snapshot, or why the files were refused (off the event loop)."""
        previous = self.current
        try:
            # A daemon thread under a deadline: a reload past it is abandoned (the next
            # one is not kept waiting) and never holds the process at exit.
            snapshot = await run_bounded(
                lambda d: self.builder(previous.version + 1, previous, d),
                self.policy.reload_timeout_s,
                f"rankgate-reload-{previous.version + 1}",
            )
        except yamlload.ConfigError as exc:
            return None, exc.render(), exc.reason
        except ReloadTimeout as exc:
            return None, f"{self.path}: reload {exc}", "timeout"
        except Exception as exc:  # never let a reload take the proxy down
            log.exception("routes reload failed (%s)", trigger)
            return None, f"{self.path}: unexpected error: {exc!r}", "error"
        return snapshot, None, None

    def _settle(
        self,
        snapshot: Snapshot | None,
        error: str | None,
        trigger: str,
        if_changed: bool,
        started: float,
    ) -> ReloadOutcome:
        """Swap the new snapshot in (or not), and say what happened."""
        previous = self.current
        now = time.time()
        if error is not None:
            result = "error"
            self.last_error, self.last_error_at = error, now
            log.error(
                "routes reload refused (%s); still serving version %d: %s",
                trigger,
                previous.version,
                error,
            )
        elif snapshot is None:  # unreachable: no error means a snapshot was built
            raise AssertionError("reload built no snapshot")
        elif if_changed and previous.version > 0 and snapshot.fingerprint == previous.fingerprint:
            # The files say what is already served: keep it (and its version).
            result = "unchanged"
            self.last_error = None
            log.info("routes unchanged (%s): still version %d", trigger, previous.version)
        else:
            result = "ok"
            self.current = snapshot
            self.last_error = None
            self.last_reload_at = now
            log.info(
                "routes reloaded (%s): version %d, %d routes, models %s",
                trigger,
                snapshot.version,
                len(snapshot.routes),
                sorted(snapshot.models),
            )
        del previous  # the old snapshot lives on only in requests still in flight
        self.reload_counts[result] += 1
        outcome = ReloadOutcome(
            result=result,
            trigger=trigger,
            version=self.current.version,
            error=error,
            seconds=time.perf_counter() - started,
            at=now,
            reason=self._reason if error is not None else None,
        )
        self.last_outcome = outcome
        return outcome

    def _notify(self, outcome: ReloadOutcome | None, snapshot: Snapshot | None) -> None:
        for listener in self.listeners:
            try:
                listener(outcome, snapshot)
            except Exception:
                log.exception("reload listener failed")
