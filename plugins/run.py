"""Calling a route's plugins: timing each one, and turning its failures into a reason.

The feed pipeline calls these; nothing here blocks or retries. A hook that raises is
reported as ``PluginFailure`` (the pipeline serves the origin's bytes), with the reason
``plugin-error``, or a ``redis-*`` reason when the plugin's Redis call failed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from plugins.context import FeedContext, ItemArray, ItemsNotFound
from proxy.users import MAX_USER_ID

log = logging.getLogger("rankgate.plugins")


class PluginFailure(Exception):
    def __init__(self, reason: str, plugin: str) -> None:
        super().__init__(f"{plugin}: {reason}")
        self.reason = reason
        self.plugin = plugin


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, RedisTimeoutError):
        return "redis-timeout"
    if isinstance(exc, RedisConnectionError):
        return "redis-unavailable"
    if isinstance(exc, RedisError):
        return "redis-error"
    return "plugin-error"


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
    timing_key: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "timing_key", f"plugin:{self.name}")


def _failed(plugin: LoadedPlugin, exc: BaseException) -> PluginFailure:
    reason = failure_reason(exc)
    if reason == "plugin-error":
        log.warning("plugin %s (%s) failed", plugin.name, plugin.where, exc_info=exc)
    else:
        log.warning("plugin %s: %s: %s", plugin.name, reason, exc)
    return PluginFailure(reason, plugin.name)


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

    @property
    def active(self) -> bool:
        return bool(self.user or self.items or self.rules)

    @property
    def prefetchers(self) -> tuple[LoadedPlugin, ...]:
        return tuple(p for p in self.rules if p.prefetch is not None)

    def resolve_user(self, ctx: FeedContext) -> str | None:
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
        plugin = self.items
        assert plugin is not None and plugin.find_items is not None
        started = time.perf_counter()
        try:
            found = plugin.find_items(ctx)
            arrays = list(found)
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

    def put(self, arr: ItemArray, ranked: list[Any], ctx: FeedContext) -> None:
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

    def rerank(self, ctx: FeedContext, deadline: float | None) -> None:
        """Every rules plugin in order on the array set in ``ctx``; each is checked for
        what it left behind, and for the budget (``loop.time()`` based; None: no
        budget, for tests), before the next one runs."""
        loop = asyncio.get_running_loop() if deadline is not None else None
        m, n = ctx.positions.size, len(ctx.items)
        for plugin in self.rules:
            assert plugin.rerank is not None
            order = ctx.order
            started = time.perf_counter()
            try:
                plugin.rerank(ctx)
                _check(ctx, m, n, order)
            except Exception as exc:
                raise _failed(plugin, exc) from exc
            finally:
                _add_time(ctx, plugin, started)
            if loop is not None and deadline is not None and loop.time() > deadline:
                raise PluginFailure("budget", plugin.name)


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
