"""The per-request context every hook receives, and what an items hook returns.

One ``FeedContext`` is made per feed request and passed to each hook of the route's
plugins in turn. Fields fill in as the request moves down the pipeline; each field says
below from which hook on it is set, and whether a hook may change it.

    request start     resolve_user(ctx)   request, view, route, timings
    body decoded      find_items(ctx)     + doc, user_id, arm, model
    items found       prefetch(ctx)       + found              (async, once per request)
    after scoring     rerank(ctx)         + items .. order     (once per item array)

Plugin objects are made once per routes snapshot and shared by every request, so
per-request data belongs in ``ctx.state`` (keyed by the plugin object), never on
``self``.

This module, ``plugins.hooks`` and ``plugins.spec`` are the plugin API: they import
nothing from the proxy, so a plugin depends on them alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

__all__ = ["MAX_USER_ID", "FeedContext", "ItemArray", "ItemsNotFound", "RequestView"]

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from aiohttp import web

# Longer values are not user ids; they would only bloat Redis keys.
MAX_USER_ID = 256


class ItemsNotFound(Exception):
    """Raised by ``find_items`` when the body has no item array: the origin's bytes are
    served with ``reason=items-not-found`` (not a plugin error)."""


@dataclass(frozen=True, slots=True)
class RequestView:
    """The parts of a request that resolvers, conditions and rules read."""

    headers: Mapping[str, str]
    cookies: Mapping[str, str]
    query: Mapping[str, str]


@dataclass(slots=True)
class ItemArray:
    """One array of items to re-order, as ``find_items`` returns it.

    ``items`` is the list object inside ``ctx.doc``: it is re-ordered in place
    (``items[:] = new_order``) unless ``put`` is given, which then receives the new
    order instead (for items that are not one list of the document, e.g. several arrays
    ranked as one). ``ids[k]`` is the embedding id of ``items[k]``, or None: an item
    without an id is not scored and keeps its slot.
    """

    items: list[Any]
    ids: list[str | None]
    put: Callable[[list[Any]], None] | None = None


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


# Shared read-only defaults: a context is made per request, and five fresh arrays each
# time would cost more than the rest of the constructor.
_NO_INDEX = _frozen(np.empty(0, dtype=np.intp))
_NO_FLOATS = _frozen(np.empty(0, dtype=np.float32))
_NO_MATRIX = _frozen(np.empty((0, 0), dtype=np.float32))
_NO_MASK = _frozen(np.empty(0, dtype=bool))


@dataclass(slots=True, eq=False)
class FeedContext:
    # -- set at request start (every hook) -------------------------------------------
    request: web.BaseRequest | None
    """The aiohttp request. Read only. None when a test drives hooks without a server
    (``plugins.testing.context``)."""
    view: RequestView
    """Headers, cookies and query of the request: what resolvers and rules usually read."""
    route: str
    """The route's name."""
    timings: dict[str, float]
    """Stage durations in seconds (the request record's). The pipeline adds each
    plugin's own time under ``plugin:NAME``; a plugin may add keys of its own."""
    redis: aioredis.Redis | None = None
    """The embeddings' Redis client (redis-py's full API; same pool and
    ``redis.timeout_ms``), for prefetch. Its errors fail the request open as
    redis-timeout / redis-unavailable / redis-error, naming the plugin."""
    command: Callable[..., Awaitable[Any]] | None = None
    """``await ctx.command("SMISMEMBER", key, *ids)``: one raw command on the proxy's own
    hot-path connections, about a third of the CPU of a ``ctx.redis`` call. Replies
    are raw (bytes, ints, lists). Same timeout and error handling as ``ctx.redis``."""
    state: dict[object, Any] = field(default_factory=dict)
    """Per-request scratch space; key it by the plugin object (``ctx.state[self]``)."""

    # -- set after resolve_user (find_items on) ---------------------------------------
    user_id: str | None = None
    arm: str | None = None
    """The chosen experiment arm (``default`` or an experiment's name)."""
    model: str | None = None
    """The chosen model's name."""

    # -- set before find_items ---------------------------------------------------------
    doc: Any = None
    """The decoded JSON body. find_items may change it (it is what is serialized)."""

    # -- set before prefetch -----------------------------------------------------------
    found: list[ItemArray] = field(default_factory=list)
    """Every item array find_items returned (prefetch sees all of them at once)."""

    # -- set before each rerank call (one call per item array) -------------------------
    items: list[Any] = field(default_factory=list)
    """The array's items in origin order. Read only: rules change the masks and order,
    and the pipeline builds the new list from them. (The built-in ``annotate``, listed
    last, is the exception: it writes each scored item's score into the item.)"""
    ids: list[str | None] = field(default_factory=list)
    positions: np.ndarray = field(default_factory=lambda: _NO_INDEX)
    """int [M]: indices into ``items`` of the M scored items, ascending. Read only."""
    embeddings: np.ndarray = field(default_factory=lambda: _NO_MATRIX)
    """float32 [M, D]: the scored items' embeddings, row k for ``positions[k]``. Read only."""
    user_embedding: np.ndarray = field(default_factory=lambda: _NO_FLOATS)
    """float32 [D]. Read only."""
    scores: np.ndarray = field(default_factory=lambda: _NO_FLOATS)
    """float [M]: the model's scores, higher first. May be replaced or changed in place
    (same shape, finite values), e.g. by boost."""
    fixed: np.ndarray = field(default_factory=lambda: _NO_MASK)
    """bool [N]: items that keep their origin slot. Starts True for unscored items; a
    rule may set more (pin). It should not clear it for unscored items."""
    dropped: np.ndarray = field(default_factory=lambda: _NO_MASK)
    """bool [N]: items left out of the response (filter). Dropping wins over fixed."""
    order: np.ndarray | None = None
    """int [M] or None: a permutation of ``range(M)`` (indices into ``positions``), best
    first. None means "by descending score" (stable). Once a rule sets it, later score
    changes no longer move items: list score rules (boost) before order rules
    (diversify)."""

    def movable(self) -> np.ndarray:
        """bool [M]: scored items that are neither fixed nor dropped (the ones ranked)."""
        pos = self.positions
        return ~(self.fixed[pos] | self.dropped[pos])
