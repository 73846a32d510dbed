"""Big feeds off the event loop: a body over ``feed.offload_min_bytes`` is parsed and spliced in
a small pool of re-rank processes, so that it never holds the interpreter other requests wait
for.

Which feeds: those of routes whose items are spliced (``proxy.routing.reads``) and that have
no rules plugins, outside ``rankgate explain``. Any other feed, however big, runs on the
event loop as before (the model itself runs in a thread from ``feed.thread_min_items``).

A big feed takes two trips to one process: the body goes there, which finds the items,
keeps the body and its items' bounds, and returns their ids; the vectors are looked up and
scored here as for any feed; then only the new order goes to the same process, which splices
the items' bytes and returns the response's body. The body crosses the pipe once and is
parsed once. Each trip waits within the route's budget. The pool is bounded: at most
``PER_WORKER`` feeds per process, from the first trip to the end of the second, and a feed
beyond that is served as the origin sent it (``offload-busy``), never queued; a process
that fails or dies gives ``offload-error`` and the pool is made anew. The pool starts at the
first big feed; until it is up, big feeds run on the event loop, so a feed's outcome is the
same with the pool on or off.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import os
import time
from collections import OrderedDict
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing.shared_memory import SharedMemory

import msgspec
import numpy as np

from proxy.feed.budget import within
from proxy.feed.pooled import find_ids, join, ready
from proxy.outcome.errors import Reason, Skip
from proxy.routing.reads import BodyPlan

log = logging.getLogger("rankgate.offload")

# Feeds per process, from the first trip to the end of the second: one being read, one
# between its trips, one being joined. Bounds the calls queued there and the bodies held.
PER_WORKER = 3
RETRY_S = 5.0  # after a pool failed to start, big feeds stay on the loop this long
# Id lists the serving process keeps, by their JSON (the pages it has had lately): the same
# page again costs a hash of ~60 KB instead of 10,000 new strings, a tuple of them and its
# compare with the cached list's key (docs/performance.md).
PAGES = 8
PAGE_IDS = 100_000  # and their ids together (~6 MB of strings and tuples at the bench's)
# Each place has a shared memory block the body goes in by and the response comes out by:
# through the pipe, a 1.2 MB body's pickling and the response's reading held the serving
# process's interpreter ~2.5 ms (docs/performance.md). A bigger body takes the pipe.
SLOT_BYTES = 2 << 20


@dataclass(eq=False)
class Worker:
    """One re-rank process (an executor of one, so both trips of a feed reach it)."""

    pool: ProcessPoolExecutor
    slots: list[SharedMemory | None]  # a place's shared memory (None: the pipe only)
    free: list[int] = field(default_factory=list)  # the places no feed holds
    forget: list[int] = field(default_factory=list)  # keys to drop at the next first trip

    @property
    def feeds(self) -> int:
        return len(self.slots) - len(self.free)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        for shm in self.slots:
            if shm is not None:
                shm.close()
                shm.unlink()


@dataclass(eq=False)
class Ticket:
    """One feed's place in one process, from its first trip until it is done with it
    and no call of it is running there."""

    worker: Worker
    key: int
    place: int  # which of the worker's places (and its shared memory)
    calls: int = 0
    closed: bool = False
    released: bool = False
    joined: bool = False  # the second trip was sent: the process drops the body itself

    def close(self) -> None:
        """The feed is done with its place (served, or given up at any point)."""
        self.closed = True
        self.release()

    def release(self) -> None:
        if self.closed and self.calls == 0 and not self.released:
            self.released = True
            self.worker.free.append(self.place)
            if not self.joined:  # the process may hold its body: dropped next time
                self.worker.forget.append(self.key)


class Offload:
    """The pool of re-rank processes and its bound."""

    def __init__(self, workers: int, min_bytes: int) -> None:
        self.workers = workers
        self.min_bytes = min_bytes
        self.procs: list[Worker] = []
        self.ready = False
        self.failed_at = -RETRY_S
        self._keys = itertools.count()
        self.pages: OrderedDict[bytes, tuple[list[str | None], tuple[str, ...] | None]] = (
            OrderedDict()
        )
        self.page_ids = 0  # the ids in ``pages``
        self._ids = msgspec.json.Decoder(list[str | None])

    @property
    def in_flight(self) -> int:
        return sum(w.feeds for w in self.procs)

    def takes(self, raw: bytes, plan: BodyPlan | None, rules: int, explaining: bool) -> bool:
        """Whether this body goes to the pool (starting it, the first time)."""
        if len(raw) < self.min_bytes or plan is None or rules or explaining:
            return False
        if not self.ready:
            self._start()
            return False  # on the loop until the pool answers
        return True

    def _start(self) -> None:
        if self.procs or time.monotonic() - self.failed_at < RETRY_S:
            return
        context = multiprocessing.get_context("spawn")
        procs = self.procs = [
            Worker(ProcessPoolExecutor(1, mp_context=context), _slots(), list(range(PER_WORKER)))
            for _ in range(self.workers)
        ]
        loop = asyncio.get_running_loop()
        waiting = [len(procs)]

        def started(future: Future[bool]) -> None:
            ok = not future.cancelled() and future.exception() is None
            loop.call_soon_threadsafe(self._started, procs, ok, waiting)

        try:
            for worker in procs:
                names = [shm.name for shm in worker.slots if shm is not None]
                worker.pool.submit(ready, names).add_done_callback(started)
        except (BrokenProcessPool, RuntimeError):
            self._broken(procs)

    def _started(self, procs: list[Worker], ok: bool, waiting: list[int]) -> None:
        if procs is not self.procs:
            return
        if not ok:
            log.warning("the re-rank processes did not start; big feeds stay on the event loop")
            self._broken(procs)
            return
        waiting[0] -= 1
        self.ready = waiting[0] == 0

    def _broken(self, procs: list[Worker]) -> None:
        if procs is self.procs:
            self.procs, self.ready, self.failed_at = [], False, time.monotonic()
        for worker in procs:
            worker.close()

    def open(self) -> Ticket:
        """A place for one feed in the least busy process; Skip when every process has
        ``PER_WORKER`` feeds (offload-busy) or the pool is down (offload-error)."""
        if not self.ready or not self.procs:
            raise Skip(Reason.OFFLOAD_ERROR, "the re-rank processes are restarting")
        worker = max(self.procs, key=lambda w: len(w.free))
        if not worker.free:
            raise Skip(Reason.OFFLOAD_BUSY)
        return Ticket(worker, next(self._keys), worker.free.pop())

    async def find(
        self, ticket: Ticket, deadline: float, raw: bytes, plan: BodyPlan
    ) -> tuple[list[str | None], tuple[str, ...] | None] | None:
        """The first trip: the items' ids and, when none is null, their tuple (the same
        objects for the same page again: shared, read-only), or None. The body is kept
        there for the second trip."""
        forget, ticket.worker.forget = ticket.worker.forget, []
        body: bytes | tuple[str, int] = raw
        shm = ticket.worker.slots[ticket.place]
        if shm is not None and len(raw) <= shm.size:
            shm.buf[: len(raw)] = raw
            body = (shm.name, len(raw))
        args = (ticket.key, body, plan.path, plan.id_path, forget)
        found = await self.call(ticket, deadline, find_ids, *args)
        if found is None:
            return None
        assert isinstance(found, tuple)
        blob, nones = found
        page = self.pages.get(blob)
        if page is None:
            ids = self._ids.decode(blob)
            page = self.pages[blob] = (ids, None if nones else tuple(ids))
            self.page_ids += len(ids)
            while len(self.pages) > PAGES or self.page_ids > PAGE_IDS:
                self.page_ids -= len(self.pages.popitem(last=False)[1][0])
        else:
            self.pages.move_to_end(blob)
        return page

    async def join(self, ticket: Ticket, deadline: float, source: np.ndarray) -> bytes:
        """The second trip: the body kept there, its items in the order ``source`` gives."""
        ticket.joined = True
        shm = ticket.worker.slots[ticket.place]
        slot = None if shm is None else shm.name
        out = await self.call(ticket, deadline, join, ticket.key, source, slot)
        if isinstance(out, int):
            if shm is None or shm.buf is None:  # closed meanwhile: the pool is going away
                raise Skip(Reason.OFFLOAD_ERROR, "the re-rank process was restarted")
            return bytes(shm.buf[:out])
        assert isinstance(out, bytes)
        return out

    async def call(self, ticket: Ticket, deadline: float, fn: object, *args: object) -> object:
        """``fn(*args)`` in the ticket's process, within ``deadline``; Skip(offload-error)
        when the call failed or the process is gone."""
        worker = ticket.worker
        if ticket.closed or worker not in self.procs:  # made anew: what it held is gone
            raise Skip(Reason.OFFLOAD_ERROR, "the re-rank process was restarted")
        try:
            job = asyncio.wrap_future(worker.pool.submit(fn, *args))  # type: ignore[arg-type]
        except (BrokenProcessPool, RuntimeError):
            self._broken(self.procs)
            raise Skip(Reason.OFFLOAD_ERROR) from None
        # The place is held until the process is done with the call, even past the budget.
        ticket.calls += 1
        job.add_done_callback(lambda done: self._done(ticket, done))
        try:
            return await within(job, deadline)
        except Skip:
            raise
        except BrokenProcessPool:
            if worker in self.procs:
                self._broken(self.procs)
            raise Skip(Reason.OFFLOAD_ERROR) from None
        except Exception as exc:
            log.warning("re-rank process: %s: %s", type(exc).__name__, exc)
            raise Skip(Reason.OFFLOAD_ERROR, str(exc) or type(exc).__name__) from None

    def _done(self, ticket: Ticket, job: asyncio.Future[object]) -> None:
        ticket.calls -= 1
        ticket.release()
        if not job.cancelled():
            job.exception()  # read: a late failure is not logged as never retrieved

    def close(self) -> None:
        procs, self.procs, self.ready = self.procs, [], False
        for worker in procs:
            worker.close()


def _slots() -> list[SharedMemory | None]:
    """A process's places' shared memory, its pages reserved now: a full /dev/shm is
    then an error here (those places use the pipe), never a SIGBUS at a write."""
    slots: list[SharedMemory | None] = []
    for _ in range(PER_WORKER):
        shm = None
        try:
            shm = SharedMemory(create=True, size=SLOT_BYTES)
            os.posix_fallocate(shm._fd, 0, SLOT_BYTES)  # type: ignore[attr-defined]
        except OSError as exc:
            log.warning("no shared memory for the re-rank processes (%s): the pipe only", exc)
            if shm is not None:
                shm.close()
                shm.unlink()
            shm = None
        slots.append(shm)
    return slots
