"""What a serving process holds while it serves, entered and left as one lifespan.

``open_runtime`` enters every resource in one ``AsyncExitStack``, in the order each
needs the one before: the embedded Valkey (when ``redis.url`` is absent), the Redis
client and embedding store, the origin client, then the routes snapshot with its models
loaded and warmed. Leaving it releases them in reverse order, each even when another
fails to close. Nothing here runs at import.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from proxy.config.settings import Settings
from proxy.config.yamlload import ConfigError
from proxy.experiments.events import EventsEndpoint
from proxy.experiments.exposure import ExposureLog
from proxy.experiments.guardrails import CLICK_WINDOW_S, Guard, running_guard
from proxy.experiments.limiter import TokenCounts
from proxy.experiments.shadow import ShadowRunner, ShadowStats
from proxy.experiments.sink import RecordQueue, running_sink
from proxy.experiments.tokens import UNIT_LABEL, SecretKeyError, TokenSigner, key_from_env
from proxy.feed.offload import Offload
from proxy.feed.state import FeedServices
from proxy.http.forward import Forwarder
from proxy.http.limits import ConnectionStats
from proxy.outcome.record import Observer
from proxy.routing.current import SnapshotStore
from proxy.routing.limits import RoutesPolicy
from proxy.routing.reload import RoutesWatcher
from proxy.routing.sources import RedisRoutesSource, routes_follower
from proxy.serve.probes import ReloadProbes
from proxy.serve.tracing import Tracer, open_tracer
from proxy.store.connect import connect_store
from proxy.store.embeddings import EmbeddingStore
from proxy.store.valkey import EmbeddedValkey

log = logging.getLogger("rankgate.runtime")


@dataclass(eq=False)
class ServingState:
    """What the admin port reports about this process, from start to exit."""

    started_at: float = field(default_factory=time.time)
    ready_at: float | None = None
    draining: bool = False
    runtime: Runtime | None = None  # set once everything below is ready


@dataclass(eq=False)
class Runtime:
    """Everything a serving process uses to answer requests; all of it ready."""

    settings: Settings
    redis_url: str
    embeddings: EmbeddingStore
    forwarder: Forwarder
    store: SnapshotStore
    feed: FeedServices
    exposures: RecordQueue | None = None  # with exposures on: the sink's queue
    events: EventsEndpoint | None = None
    # What keeps the routes current: the file watcher, a Redis source, or nothing.
    follower: RoutesWatcher | RedisRoutesSource | None = None
    observers: list[Observer] = field(default_factory=list)
    connections: ConnectionStats = field(default_factory=ConnectionStats)
    shadow_stats: ShadowStats = field(default_factory=ShadowStats)
    # Each reloaded route's sample page, probed after the swap (/admin/routes shows it).
    probes: ReloadProbes | None = None
    in_flight: int = 0
    tracing: Tracer | None = None  # tracing.enabled: W3C trace context in, OTLP spans out
    guard: Guard | None = None


@contextlib.asynccontextmanager
async def embedded_valkey(settings: Settings) -> AsyncIterator[str]:
    """The config's embedded Valkey for the lifespan (started, or the running one
    reused; see proxy/store/valkey.py); yields its URL."""
    server = EmbeddedValkey.for_settings(settings)
    url = await asyncio.to_thread(server.start)
    try:
        yield url
    finally:
        await asyncio.to_thread(server.stop)


@contextlib.asynccontextmanager
async def open_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    async with contextlib.AsyncExitStack() as stack:
        redis_url = settings.redis.url
        if redis_url is None:
            redis_url = await stack.enter_async_context(embedded_valkey(settings))
        # One node or a Redis Cluster (redis.cluster): proxy/store/connect.py chooses.
        embeddings = await connect_store(redis_url, settings.redis, settings.embeddings)
        stack.push_async_callback(embeddings.close)
        forwarder = Forwarder(settings.origin, settings.listen)
        stack.push_async_callback(forwarder.close)
        await forwarder.start()
        store = SnapshotStore(
            settings.routes_path, settings.embeddings.dim, RoutesPolicy.from_settings(settings)
        )
        # Made before the first load: a Redis source builds the snapshots (started by
        # the server once it listens).
        follower = routes_follower(settings, store)
        await store.load_initial_bounded()
        probes = ReloadProbes(settings)
        store.listeners.append(probes.on_reload)
        stack.push_async_callback(probes.close)
        queue, recorder, events = await _experiment_loop(stack, settings, redis_url)
        tracer = open_tracer(settings.tracing)
        if tracer is not None:
            # Last in, first out: queued spans are flushed once the listener is down.
            stack.push_async_callback(asyncio.to_thread, tracer.close)
        f = settings.feed
        shadows = ShadowRunner(shadow_stats := ShadowStats(), f.thread_min_items)
        guard = await _guard(stack, settings, redis_url, store, embeddings, events)
        token = settings.admin.token
        feed = FeedServices(
            forwarder,
            embeddings,
            f.max_body_bytes,
            f.thread_min_items,
            recorder,
            shadows,
            explain_token=token.encode() if token else None,
            guard=guard,
            offload=_offload(stack, settings),
        )
        runtime = Runtime(
            settings,
            redis_url,
            embeddings,
            forwarder,
            store,
            feed,
            queue,
            events,
            follower,
            observers=[guard.observe],
            shadow_stats=shadow_stats,
            tracing=tracer,
            probes=probes,
            guard=guard,
        )
        if tracer is not None:
            runtime.observers.append(tracer.export)
        yield runtime


def _offload(stack: contextlib.AsyncExitStack, settings: Settings) -> Offload | None:
    """The re-rank processes for big feeds (started at the first one), or None."""
    f = settings.feed
    if f.offload_workers == 0:
        return None
    offload = Offload(f.offload_workers, f.offload_min_bytes)
    stack.callback(offload.close)
    return offload


async def _experiment_loop(
    stack: contextlib.AsyncExitStack, settings: Settings, redis_url: str
) -> tuple[RecordQueue | None, ExposureLog | None, EventsEndpoint | None]:
    """The exposure log's queue and recorder, and the events endpoint, where enabled."""
    if not settings.exposures.enabled:
        return None, None, None
    signer, unit_key = _keys(settings)
    queue = await stack.enter_async_context(
        running_sink(settings.exposures, redis_url, settings.exposures_dir)
    )
    recorder = ExposureLog(settings.exposures, queue, signer, unit_key)
    events = None
    if settings.events.enabled:
        counts = token_counts(settings, redis_url)
        stack.push_async_callback(counts.close)
        events = EventsEndpoint(settings.events, signer, queue, settings.listen, counts)
    return queue, recorder, events


def token_counts(settings: Settings, redis_url: str) -> TokenCounts:
    """Per-token event counts, shared in the exposures' Redis (the Redis every process of
    the fleet, or every worker of an embedded Valkey, reaches). A Redis Cluster routes
    keys by slot, which a plain client does not: there the count is per process."""
    ev, exp = settings.events, settings.exposures
    client = None
    if not settings.redis.cluster or exp.redis_url:
        timeout = exp.timeout_ms / 1000.0
        client = aioredis.Redis.from_url(
            exp.redis_url or redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
    return TokenCounts(ev.max_per_id, ev.max_age_s, client, 2 * exp.timeout_ms / 1000.0)


async def _guard(
    stack: contextlib.AsyncExitStack,
    settings: Settings,
    redis_url: str,
    store: SnapshotStore,
    embeddings: EmbeddingStore,
    events: EventsEndpoint | None,
) -> Guard:
    """The guardrails and bandits of the routes being served: live counts shared in
    Redis, checked in the background, fed the accepted clicks."""
    ttl_s = min(int(settings.events.max_age_s), CLICK_WINDOW_S)
    guard = await stack.enter_async_context(
        running_guard(
            redis_url,
            lambda: [r.spec for r in store.current.routes],
            ttl_s,
            isinstance(embeddings.client, RedisCluster),
        )
    )
    if events is not None:
        events.listeners.append(guard.clicked)
    return guard


def _keys(settings: Settings) -> tuple[TokenSigner, bytes | None]:
    """The token signer and the unit key, from the environment; a missing or short key
    stops the start with a one-line error."""
    cfg = settings.exposures
    try:
        signer = TokenSigner(key_from_env(cfg.token_key_env))
        unit_key = None
        if cfg.unit == "hmac-sha256":
            env = cfg.unit_key_env
            unit_key = key_from_env(env) if env else signer.derive(UNIT_LABEL)
    except SecretKeyError as exc:
        raise ConfigError("exposures", [str(exc)]) from None
    return signer, unit_key
