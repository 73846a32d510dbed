"""Calling a route's plugins: timing each one, checking what it left, and reporting its
failures as ``PluginFailure``.

The feed pipeline calls these; nothing here blocks or retries. A route's own ``user:``
and ``items:`` are plugins too (``sources`` and ``dotted``, compiled from the route):
when they stand alone, the runner calls their code directly, with no timing or output
checks (the built-ins are the proxy's own code), so a route without plugins pays
nothing for the plugin machinery.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from redis.exceptions import RedisError

from plugins.arrange import arrangement
from plugins.builtin.dotted import DottedItems, dig, item_ids
from plugins.builtin.sources import RequestSources, resolve_user
from plugins.context import MAX_USER_ID, FeedContext, ItemArray, ItemsNotFound

log = logging.getLogger("rankgate.plugins")


class PluginFailure(Exception):
    """A hook raised, left its output malformed, or overran the route's budget.

    ``cause`` is what the hook raised (None when it overran the budget); the pipeline
    names the reason from it (a Redis error in a hook is a ``redis-*`` reason)."""

    def __init__(self, plugin: str, cause: BaseException | None) -> None:
        super().__init__(f"{plugin}: {'over budget' if cause is None else repr(cause)}")
        self.plugin = plugin
        self.cause = cause


@dataclass(frozen=True, eq=False)
class LoadedPlugin:
    """A plugin object made from one ``plugins:`` entry, with its hooks bound once."""

    name: str  # the entry's ``use``: what X-Rerank, the record and Server-Timing show
    where: str  # its YAML path, e.g. routes[0].plugins[1]
    instance: object
    resolve_user: Callable[[FeedContext], Any] | None = None
    find_items: Callable[[FeedContext], Any] | None = None
    prefetch: Callable[[FeedContext], Awaitable[None]] | None = None
    rerank: Callable[[FeedContext], Any] | None = None
    vary: tuple[str, ...] = ()
    # The top-level item keys its hooks read, or None: whole items (proxy/routing/reads.py).
    item_fields: tuple[str, ...] | None = None
    # Compiled from the route's own user:/items: rather than listed under plugins:.
    implicit: bool = False
    timing_key: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "timing_key", f"plugin:{self.name}")


def _failed(plugin: LoadedPlugin, exc: BaseException) -> PluginFailure:
    if isinstance(exc, RedisError):
        log.warning("plugin %s: Redis: %s: %s", plugin.name, type(exc).__name__, exc)
    else:
        log.warning("plugin %s (%s) failed", plugin.name, plugin.where, exc_info=exc)
    return PluginFailure(plugin.name, exc)


@dataclass(frozen=True, slots=True)
class RuleState:
    """What a rule can change, copied: for explaining a request (``rankgate explain``)."""

    scores: np.ndarray
    fixed: np.ndarray
    dropped: np.ndarray
    order: np.ndarray | None

    @classmethod
    def of(cls, ctx: FeedContext) -> RuleState:
        order = None if ctx.order is None else np.array(ctx.order)
        return cls(np.array(ctx.scores), ctx.fixed.copy(), ctx.dropped.copy(), order)


# Per rules plugin, in the order they ran: its name and the state before and after it.
Watch = list[tuple[str, RuleState, RuleState]]


def _add_time(ctx: FeedContext, plugin: LoadedPlugin, started: float) -> None:
    key = plugin.timing_key
    ctx.timings[key] = ctx.timings.get(key, 0.0) + time.perf_counter() - started


@dataclass(frozen=True, eq=False)
class RoutePlugins:
    """The plugins of one route, by kind, in the order the route lists them."""

    user: tuple[LoadedPlugin, ...] = ()
    items: LoadedPlugin | None = None
    rules: tuple[LoadedPlugin, ...] = ()
    vary: tuple[str, ...] = ()
    # The fast paths: the route's own sources / dotted paths, standing alone.
    sources: RequestSources | None = field(default=None, init=False)
    dotted: DottedItems | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if len(self.user) == 1 and self.user[0].implicit:
            assert isinstance(self.user[0].instance, RequestSources)
            object.__setattr__(self, "sources", self.user[0].instance)
        if self.items is not None and self.items.implicit:
            assert isinstance(self.items.instance, DottedItems)
            object.__setattr__(self, "dotted", self.items.instance)

    @property
    def prefetchers(self) -> tuple[LoadedPlugin, ...]:
        return tuple(p for p in self.rules if p.prefetch is not None)

    def resolve_user(self, ctx: FeedContext) -> str | None:
        if self.sources is not None:
            return resolve_user(self.sources.sources, ctx.view)
        for plugin in self.user:
            assert plugin.resolve_user is not None
            started = time.perf_counter()
            try:
                value = plugin.resolve_user(ctx)
            except Exception as exc:
                raise _failed(plugin, exc) from exc
            finally:
                _add_time(ctx, plugin, started)
            if value is None:
                continue
            if not isinstance(value, str):
                raise _failed(plugin, TypeError(f"resolve_user returned {type(value).__name__}"))
            value = value.strip()
            if value and len(value) <= MAX_USER_ID:
                return value
        return None

    def find_items(self, ctx: FeedContext) -> list[ItemArray]:
        """The item arrays of ``ctx.doc``; raises ItemsNotFound or PluginFailure."""
        if self.dotted is not None:
            items = dig(ctx.doc, self.dotted.path)
            if not isinstance(items, list):
                raise ItemsNotFound(".".join(self.dotted.path))
            return [ItemArray(items, item_ids(items, self.dotted.id_path))]
        plugin = self.items
        assert plugin is not None and plugin.find_items is not None
        started = time.perf_counter()
        try:
            arrays = list(plugin.find_items(ctx))
            for arr in arrays:
                if not (
                    isinstance(arr, ItemArray)
                    and isinstance(arr.items, list)
                    and len(arr.ids) == len(arr.items)
                ):
                    raise TypeError("find_items must return ItemArrays with one id per item")
        except ItemsNotFound:
            raise
        except Exception as exc:
            raise _failed(plugin, exc) from exc
        finally:
            _add_time(ctx, plugin, started)
        return arrays

    def put(self, arr: ItemArray, ranked: list[Any]) -> None:
        """The new order into the document: in place, or through the array's ``put``."""
        if arr.put is None:
            arr.items[:] = ranked
            return
        plugin = self.items
        assert plugin is not None
        try:
            arr.put(ranked)
        except Exception as exc:
            raise _failed(plugin, exc) from exc

    def start_prefetch(self, ctx: FeedContext) -> list[tuple[LoadedPlugin, asyncio.Future[None]]]:
        return [(p, asyncio.ensure_future(self._prefetch(p, ctx))) for p in self.prefetchers]

    @staticmethod
    async def _prefetch(plugin: LoadedPlugin, ctx: FeedContext) -> None:
        assert plugin.prefetch is not None
        try:
            await plugin.prefetch(ctx)
        except Exception as exc:
            raise _failed(plugin, exc) from exc

    def apply(
        self,
        ctx: FeedContext,
        arr: ItemArray,
        positions: np.ndarray,
        scores: np.ndarray,
        vectors: np.ndarray,
        deadline: float | None,
        watch: Watch | None = None,
    ) -> np.ndarray:
        """Every rules plugin on one scored array; returns, for each slot of the array as
        it is served, the index of the item there (dropped items are in no slot).
        ``watch`` (only when explaining a request) receives each rule's before and after."""
        n = len(arr.items)
        unscored = np.ones(n, dtype=bool)
        unscored[positions] = False
        ctx.items, ctx.ids, ctx.positions = arr.items, arr.ids, positions
        ctx.embeddings, ctx.scores = vectors, np.array(scores, dtype=np.float32).reshape(-1)
        ctx.fixed, ctx.dropped, ctx.order = unscored.copy(), np.zeros(n, dtype=bool), None
        self.rerank(ctx, deadline, watch)
        # Unscored items cannot be ranked whatever a rule did to ``fixed``.
        return arrangement(positions, ctx.scores, ctx.fixed | unscored, ctx.dropped, ctx.order)

    def rerank(self, ctx: FeedContext, deadline: float | None, watch: Watch | None = None) -> None:
        """Every rules plugin in order on the array set in ``ctx``; each is checked for
        what it left behind, and for the budget (``loop.time()`` based; None: no
        budget, for tests), before the next one runs."""
        loop = asyncio.get_running_loop() if deadline is not None else None
        m, n = ctx.positions.size, len(ctx.items)
        for plugin in self.rules:
            assert plugin.rerank is not None
            order = ctx.order
            before = None if watch is None else RuleState.of(ctx)
            started = time.perf_counter()
            try:
                plugin.rerank(ctx)
                _check(ctx, m, n, order)
            except Exception as exc:
                raise _failed(plugin, exc) from exc
            finally:
                _add_time(ctx, plugin, started)
            if watch is not None and before is not None:
                watch.append((plugin.name, before, RuleState.of(ctx)))
            if loop is not None and deadline is not None and loop.time() > deadline:
                raise PluginFailure(plugin.name, None)


def _check(ctx: FeedContext, m: int, n: int, previous_order: np.ndarray | None) -> None:
    """A rule's output must stay well formed, or the response would be wrong."""
    scores = ctx.scores
    if not isinstance(scores, np.ndarray) or scores.shape != (m,):
        raise ValueError(f"ctx.scores must stay a [{m}] array")
    if not np.isfinite(scores).all():
        raise ValueError("ctx.scores must stay finite")
    for name in ("fixed", "dropped"):
        mask = getattr(ctx, name)
        if not isinstance(mask, np.ndarray) or mask.shape != (n,) or mask.dtype != bool:
            raise ValueError(f"ctx.{name} must stay a bool [{n}] array")
    order = ctx.order
    if (
        order is not None
        and order is not previous_order
        and (
            not isinstance(order, np.ndarray)
            or order.shape != (m,)
            or not np.array_equal(np.sort(order), np.arange(m))
        )
    ):
        raise ValueError(f"ctx.order must be a permutation of range({m})")
