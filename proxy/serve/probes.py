"""After a reload, each route's ``sample:`` page probed as ``rankgate check`` probes it.

A live edit can break a route without breaking the file: an ``items`` path that no longer
matches the origin's feed validates, swaps in, and then every request says
``items-not-found``. So once a reload has swapped a new snapshot in, each of its routes
with a sample page (``sample:``, else an exact match path) is fetched from the origin and
judged as the feed path would (proxy/feed/sample.py). A route that would never re-rank
is a warning: one log line, and ``/admin/routes`` shows it on the route. The reload is
taken all the same (the origin may be about to change too).

The probe never holds a reload up: the listener only schedules it; it runs in a daemon
thread of its own (blocking HTTP and JSON; not the loop's executor, so a hung origin
cannot hold up a drain or the exit), each GET bounded by ``GET_TIMEOUT_S`` and all of
one reload's by ``BUDGET_S``. A newer reload's probe replaces an older one's results.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from proxy.config.settings import Settings
from proxy.feed.sample import Verdict, probe_route
from proxy.routing.current import ReloadOutcome
from proxy.routing.snapshot import CompiledRoute, Snapshot

log = logging.getLogger("rankgate.reload")

GET_TIMEOUT_S = 5.0  # one sample page (the origin's own timeouts, if shorter)
BUDGET_S = 15.0  # every route of one reload; routes past it are "not probed"

# (route, origin URL, timeout, max bytes) -> Verdict; blocking.
Probe = Callable[[CompiledRoute, str, float, int], Verdict]


class ReloadProbes:
    """Probes the routes of each snapshot a reload swaps in; the latest results by route."""

    def __init__(self, settings: Settings, probe: Probe = probe_route) -> None:
        origin = settings.origin
        self.origin = origin.url
        self.timeout_s = min(origin.connect_timeout_s + origin.timeout_s, GET_TIMEOUT_S)
        self.max_bytes = settings.feed.max_body_bytes
        self.probe = probe
        self.version = 0  # the snapshot version the results are of
        self.results: dict[str, dict[str, Any]] = {}
        self._task: asyncio.Task[None] | None = None

    def on_reload(self, outcome: ReloadOutcome | None, snapshot: Snapshot | None) -> None:
        """The store's listener (on the event loop): schedule, never wait."""
        if outcome is None or outcome.result != "ok" or snapshot is None:
            return  # the initial load (`rankgate check` is for that), or nothing new
        if self._task is not None and not self._task.done():
            self._task.cancel()  # superseded: its thread ends within its timeouts
        self._task = asyncio.get_running_loop().create_task(self._run(snapshot))

    async def _run(self, snapshot: Snapshot) -> None:
        try:
            results = await _in_thread(self._probe_all, snapshot)
        except Exception:
            log.exception("probing the reloaded routes failed")
            return
        self.version, self.results = snapshot.version, results
        for name, result in results.items():
            if result["never"]:
                log.warning(
                    "route %s would never re-rank after reload (version %d): %s (reason=%s)",
                    name,
                    snapshot.version,
                    result["detail"],
                    result["reason"],
                    extra={"event": "route-probe", "route": name, "reason": result["reason"]},
                )

    def _probe_all(self, snapshot: Snapshot) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + BUDGET_S
        results = {}
        for route in snapshot.routes:
            left = deadline - time.monotonic()
            if left <= 0:
                found = Verdict(None, f"not probed: over the {BUDGET_S:g} s budget", probed=False)
            else:
                found = self.probe(route, self.origin, min(self.timeout_s, left), self.max_bytes)
            results[route.name] = {
                "version": snapshot.version,
                "at": time.time(),
                "probed": found.probed,
                "never": found.never,
                "reason": found.reason,
                "detail": found.detail,
            }
        return results

    def describe(self, route: str) -> dict[str, Any] | None:
        """What /admin/routes shows on a route: the last probe of it, if any."""
        return self.results.get(route)

    def warnings(self) -> list[str]:
        return [
            f"{name}: would never re-rank: {r['detail']} (reason={r['reason']})"
            for name, r in self.results.items()
            if r["never"]
        ]

    async def wait(self) -> None:
        """Until the probe in flight is done (tests; a drain does not wait for it)."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def close(self) -> None:
        """Stop waiting for a probe (its thread ends on its own, within its timeouts)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _in_thread(fn: Callable[[Snapshot], Any], arg: Snapshot) -> asyncio.Future[Any]:
    """``fn(arg)`` in a daemon thread; its result (or error) as a future of this loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():  # cancelled meanwhile
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result, error = fn(arg), None
        except Exception as exc:
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="rankgate-route-probe", daemon=True).start()
    return future
