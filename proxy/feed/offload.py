"""Big feeds off the event loop: a body over ``feed.offload_min_bytes`` is parsed and spliced in
a small pool of re-rank processes, so that it never holds the interpreter other requests wait
for.

Which feeds: those of routes whose items are spliced (``proxy.routing.reads``) and that have
no rules plugins, outside ``rankgate explain``. Any other feed, however big, runs on the
event loop as before (the model itself runs in a thread from ``feed.thread_min_items``).

A big feed takes two trips: the body goes to a process, which finds the items and returns
their ids; the vectors are looked up and scored here as for any feed; then the body and the
new order go to a process again, which splices the items' bytes and returns the response's
body. Each trip waits within the route's budget. The pool is bounded: at most two feeds per
process are in flight, and a feed beyond that is served as the origin sent it
(``offload-busy``), never queued; a process that fails or dies gives ``offload-error``
and the pool is made anew. The pool starts at the first big feed; until it is up, big feeds
run on the event loop, so a feed's outcome is the same with the pool on or off.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from proxy.feed import splice
from proxy.feed.budget import within
from proxy.outcome.errors import Reason, Skip
from proxy.routing.reads import BodyPlan, build

log = logging.getLogger("rankgate.offload")

PER_WORKER = 2  # feeds in flight per process: one running, one waiting
RETRY_S = 5.0  # after a pool failed to start, big feeds stay on the loop this long

# -- in the re-rank processes ------------------------------------------------------------

_PLANS: dict[tuple[tuple[str, ...], tuple[str, ...]], BodyPlan] = {}


def _plan(path: tuple[str, ...], id_path: tuple[str, ...]) -> BodyPlan:
    plan = _PLANS.get((path, id_path))
    if plan is None:
        plan = _PLANS[path, id_path] = build(path, id_path, ())
    return plan


def ready() -> bool:
    return True


def find_ids(
    raw: bytes, path: tuple[str, ...], id_path: tuple[str, ...]
) -> list[str | None] | None:
    """The items' ids, or None: not a body the route's plan takes."""
    found = splice.find(raw, _plan(path, id_path))
    return None if found is None else found.array.ids


def join(raw: bytes, path: tuple[str, ...], id_path: tuple[str, ...], source: np.ndarray) -> bytes:
    """The body with its items' bytes in the order ``source`` gives."""
    located = splice.locate(raw, _plan(path, id_path))
    if located is None:
        raise ValueError("the body no longer splices")
    parts, start, end = located
    inner = b",".join([parts[i] for i in source.tolist()])
    return b"".join((raw[:start], inner, raw[end:]))


# -- in the serving process --------------------------------------------------------------


class Offload:
    """The pool of re-rank processes and its bound."""

    def __init__(self, workers: int, min_bytes: int) -> None:
        self.workers = workers
        self.min_bytes = min_bytes
        self.limit = workers * PER_WORKER
        self.pool: ProcessPoolExecutor | None = None
        self.ready = False
        self.in_flight = 0
        self.failed_at = -RETRY_S

    def takes(self, raw: bytes, plan: BodyPlan | None, rules: int, explaining: bool) -> bool:
        """Whether this body goes to the pool (starting it, the first time)."""
        if len(raw) < self.min_bytes or plan is None or rules or explaining:
            return False
        if not self.ready:
            self._start()
            return False  # on the loop until the pool answers
        return True

    def _start(self) -> None:
        if self.pool is not None or time.monotonic() - self.failed_at < RETRY_S:
            return
        pool = self.pool = ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn")
        )
        loop = asyncio.get_running_loop()

        def started(future: Future[bool]) -> None:
            ok = not future.cancelled() and future.exception() is None
            loop.call_soon_threadsafe(self._started, pool, ok)

        try:
            pool.submit(ready).add_done_callback(started)
        except (BrokenProcessPool, RuntimeError):
            self._broken(pool)

    def _started(self, pool: ProcessPoolExecutor, ok: bool) -> None:
        if pool is not self.pool:
            return
        if ok:
            self.ready = True
        else:
            log.warning("the re-rank processes did not start; big feeds stay on the event loop")
            self._broken(pool)

    def _broken(self, pool: ProcessPoolExecutor) -> None:
        if pool is self.pool:
            self.pool, self.ready, self.failed_at = None, False, time.monotonic()
        pool.shutdown(wait=False, cancel_futures=True)

    async def call(self, deadline: float, fn: object, *args: object) -> object:
        """``fn(*args)`` in a re-rank process, within ``deadline``; Skip when the pool is
        full (offload-busy) or the call failed (offload-error)."""
        pool = self.pool
        if pool is None or not self.ready:
            raise Skip(Reason.OFFLOAD_ERROR, "the re-rank processes are restarting")
        if self.in_flight >= self.limit:
            raise Skip(Reason.OFFLOAD_BUSY)
        try:
            job = asyncio.wrap_future(pool.submit(fn, *args))  # type: ignore[arg-type]
        except (BrokenProcessPool, RuntimeError):
            self._broken(pool)
            raise Skip(Reason.OFFLOAD_ERROR) from None
        # In flight until the process is done with it, even past this request's budget.
        self.in_flight += 1
        job.add_done_callback(self._done)
        try:
            return await within(job, deadline)
        except Skip:
            raise
        except BrokenProcessPool:
            self._broken(pool)
            raise Skip(Reason.OFFLOAD_ERROR) from None
        except Exception as exc:
            log.warning("re-rank process: %s: %s", type(exc).__name__, exc)
            raise Skip(Reason.OFFLOAD_ERROR, str(exc) or type(exc).__name__) from None

    def _done(self, job: asyncio.Future[object]) -> None:
        self.in_flight -= 1
        if not job.cancelled():
            job.exception()  # read: a late failure is not logged as never retrieved

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool, self.ready = None, False
