"""A feed request's state, and the services every feed request uses.

One ``FeedRequest`` is made per feed request; the stages (``proxy.feed.stages``, then
``proxy.feed.rerank``) fill it in, in order, and the response is built from it. Later
features read it too: an exposure record after the response, a shadow model's scores.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
import numpy as np
from aiohttp import web

from plugins.context import FeedContext, ItemArray
from plugins.run import Watch
from proxy.config.routes import Shadow
from proxy.feed.offload import Offload, Ticket
from proxy.feed.splice import Spliced
from proxy.http.forward import Forwarder
from proxy.outcome.errors import RankgateError
from proxy.outcome.record import RequestRecord
from proxy.routing.arms import Arm
from proxy.routing.sessions import ModelSession
from proxy.routing.snapshot import CompiledRoute, Snapshot
from proxy.store.embeddings import EmbeddingStore, ItemLookup


class Recorder(Protocol):
    """What keeps a record of each feed decision (``proxy.experiments.exposure.ExposureLog``)."""

    def start(self, st: FeedRequest) -> None:
        """At request start: the request id."""

    def token(self, st: FeedRequest) -> str | None:
        """The response's X-Rankgate-Id, or None."""

    def emit(self, st: FeedRequest) -> None:
        """Once the response is on its way: the record, off the request path."""


class Shadows(Protocol):
    """What runs shadow models after a response (``proxy.experiments.shadow.ShadowRunner``)."""

    def wanted(self, st: FeedRequest) -> Shadow | None:
        """The shadow to run for this (re-ranked) request, if any."""

    def start(self, st: FeedRequest, shadow: Shadow, then: Callable[[], None]) -> None:
        """Run it off the response's path, then ``then()``."""


class Guard(Protocol):
    """What takes a failing arm off the air (``proxy.experiments.guardrails.Guard``)."""

    def moved(self, route: str, arm: str) -> bool:
        """Whether the arm's users go to the default arm (a guardrail tripped)."""

    def pick(self, route: str, arm: Arm, user: str | None) -> Arm:
        """A bandit arm's model for this user now (its own arm); any other arm as is."""

    def period(self, route: str, arm: str) -> dict[str, object] | None:
        """A bandit arm's current period, models and weights: what its records carry."""

    def exposed(self, st: FeedRequest) -> None:
        """A response with a click token went out: its user and request id, counted."""


@dataclass(frozen=True, slots=True)
class FeedServices:
    """What every feed request uses, made once by the runtime."""

    forwarder: Forwarder
    embeddings: EmbeddingStore
    max_body_bytes: int
    thread_min_items: int
    recorder: Recorder | None = None
    shadows: Shadows | None = None
    # admin.token, as bytes: a request carrying it in X-Rankgate-Explain gets its
    # explanation in a response header (proxy/feed/explain.py); None: never.
    explain_token: bytes | None = None
    guard: Guard | None = None
    # The re-rank processes big feeds go to (proxy/feed/offload.py); None: all on the loop.
    offload: Offload | None = None


_NO_FLOATS = np.empty(0, dtype=np.float32)
_NO_INDEX = np.empty(0, dtype=np.intp)


@dataclass(slots=True, eq=False)
class FeedRequest:
    """One feed request's state: made once, filled in by the stages in order."""

    svc: FeedServices
    request: web.BaseRequest
    route: CompiledRoute
    snapshot: Snapshot
    record: RequestRecord
    ctx: FeedContext
    arm: Arm | None = None
    moved_from: str | None = None  # the arm a tripped guardrail moved this request from
    bandit: dict[str, object] | None = None  # a bandit arm's period and weights (its record's)
    model: ModelSession | None = None
    # An interleaved arm's models after the first (B, C, ...), in team order.
    others: list[ModelSession] = field(default_factory=list)
    request_id: str = ""  # with exposures on: names the request in its record and token
    ts_ms: int = 0  # when the response was ready (the token's and the record's time)
    skip: RankgateError | None = None  # a reason found before the origin answered
    user_task: asyncio.Task[np.ndarray | None] | None = None
    upstream: aiohttp.ClientResponse | None = None
    encoding: str = ""
    body: bytes = b""  # the origin's body as it came (still encoded)
    body_complete: bool = False  # all of it (else what was read before streaming the rest)
    deadline: float = 0.0  # loop.time() by which our own work must be done
    raw: bytes = b""  # the decoded body
    arrays: list[ItemArray] = field(default_factory=list)
    ids: list[str | None] = field(default_factory=list)  # every array's ids, end to end
    user: np.ndarray = field(default_factory=lambda: _NO_FLOATS)
    lookup: ItemLookup | None = None  # the item vectors' lookup (its list is remembered)
    # The scored items: their indices into ``ids``, and their vectors [M, dim] (row k
    # for positions[k]).
    positions: np.ndarray = field(default_factory=lambda: _NO_INDEX)
    vectors: np.ndarray = field(default_factory=lambda: _NO_FLOATS)
    scores: np.ndarray = field(default_factory=lambda: _NO_FLOATS)
    scores_others: list[np.ndarray] = field(default_factory=list)  # ``others``' scores
    # Per item array, the index (into that array, in origin order) of the item served in
    # each slot: what the response carries, for the exposure record.
    served: list[np.ndarray] = field(default_factory=list)
    # Interleaved: per item array, each slot's team ("A", "B", ..., or None when fixed).
    teams: list[list[str | None]] | None = None
    # After the response, a shadow model's top items ({"model", "items"}), for the record.
    shadow: dict[str, object] | None = None
    offloaded: bool = False  # parsed and joined in a re-rank process
    ticket: Ticket | None = None  # its place in a re-rank process, from the first trip
    ids_key: tuple[str, ...] | None = None  # tuple(ids), kept by the pool (no None)
    spliced: Spliced | None = None  # the body read by the route's plan (proxy/feed/splice.py)
    out: bytes = b""  # the re-ranked body, encoded as the origin's was
    # Only when explaining this request: each arranged array's rules, before and after.
    explains: list[Watch] | None = None

    @property
    def timings(self) -> dict[str, float]:
        return self.record.timings


_ids: list[str] = []  # request ids made ahead, from one read of the OS's randomness


def new_request_id() -> str:
    """24 hex digits: unique enough to join an event to its exposure across a fleet.
    Made 256 at a time: one ``getrandom`` for many requests."""
    if not _ids:
        pool = os.urandom(12 * 256).hex()
        _ids.extend(pool[k : k + 24] for k in range(0, len(pool), 24))
    return _ids.pop()


# A forked worker must not hand out the ids its parent holds.
os.register_at_fork(after_in_child=_ids.clear)
