"""Start-up warm-up: what the first feed request would otherwise pay for itself.

Before a serving process reports ready, it opens one keep-alive connection to the
origin (left in the client's pool, no request sent: the origin sees an idle
connection, not a request it did not ask for), opens a Redis connection (one PING on
the hot-path link, which keeps it), and runs every model once on a feed-sized batch on
the event loop's thread, where small batches run (the load's own warm run is on a
loader thread). Without it the first request costs several times a warm one
(``bench/run.py --only startup``; docs/performance.md).

A feed route with a ``sample:`` path (the page ``rankgate init`` and ``rankgate check``
fetch) has that page fetched once more and its items' vectors loaded into the item
cache, the whole page's list included: the first request for it then finds them there
(its item lookup otherwise one Redis round trip for every item, ~1 ms for 100 here).
Only routes whose items are found by their ``items:`` path are warmed (an items plugin
of one's own may do I/O); a route without ``sample:`` sends the origin nothing.

It fails open: an origin or Redis that cannot be reached, or answers slowly, is logged
as a warning and the start goes on, never waiting more than ``WARM_LIMIT_S`` in all;
the first request then opens what it needs, as it did before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import aiohttp
import numpy as np
import orjson
from yarl import URL

from plugins.context import FeedContext, RequestView
from proxy.http.forward import Forwarder
from proxy.routing.sessions import WARM_BATCH, ModelSession
from proxy.routing.snapshot import CompiledRoute
from proxy.store.embeddings import EmbeddingStore

log = logging.getLogger("rankgate.warmup")

# The longest the warm-up may delay readiness: the start-up target is ready within 1 s.
WARM_LIMIT_S = 0.5


@dataclass(slots=True)
class Warmed:
    """What the warm-up did (each step is independent of the others)."""

    origin: bool = False
    redis: bool = False
    models: int = 0
    pages: int = 0  # sample pages whose item vectors were loaded
    seconds: float = 0.0


async def warm_origin(forwarder: Forwarder) -> None:
    """One connection to the origin, put in the pool the feed requests take from.

    The request object only names the pool key (host, port, TLS) the way a forwarded
    request does; it is never sent."""
    session = forwarder.session
    connector = session.connector
    assert connector is not None
    request = aiohttp.ClientRequest(
        "GET", URL(forwarder.base.origin()), loop=asyncio.get_running_loop()
    )
    connection = await connector.connect(request, [], session.timeout)
    connection.release()  # into the pool, kept alive


async def warm_redis(embeddings: EmbeddingStore) -> None:
    await embeddings.ping()


async def warm_page(
    forwarder: Forwarder, embeddings: EmbeddingStore, route: CompiledRoute, max_bytes: int
) -> bool:
    """The route's sample page fetched and its item vectors cached, as a re-ranked
    request would leave them; False when the page is not a feed this route can read."""
    sample = route.spec.sample
    assert sample is not None
    url = URL(str(forwarder.base).rstrip("/") + sample, encoded=True)
    # No Accept-Encoding: an identity body, read as it comes.
    async with forwarder.session.get(url, headers={"Accept": "application/json"}) as resp:
        body = await resp.content.read(max_bytes + 1)
        if resp.status != 200 or len(body) > max_bytes or "Content-Encoding" in resp.headers:
            return False
    try:
        doc = orjson.loads(body)
        ctx = FeedContext(None, RequestView({}, {}, {}), route.name, {}, doc=doc)
        ids = [i for arr in route.plugins.find_items(ctx) for i in arr.ids]
    except Exception:  # not JSON, or no items where items: says: check reports it
        return False
    wanted = ids if None not in ids else [i for i in ids if i is not None]
    if not wanted:
        return False
    lookup = embeddings.lookup(wanted)  # the same list the feed path looks up
    await embeddings.complete(lookup)
    embeddings.remember(lookup)
    return True


async def warm_pages(
    forwarder: Forwarder, embeddings: EmbeddingStore, routes: list[CompiledRoute], max_bytes: int
) -> int:
    pages = [r for r in routes if r.spec.sample is not None and r.plugins.dotted is not None]
    done = await asyncio.gather(*(warm_page(forwarder, embeddings, r, max_bytes) for r in pages))
    return sum(done)


def warm_models(models: list[ModelSession]) -> int:
    """Run each model once on a batch of WARM_BATCH items, on this thread."""
    rng = np.random.default_rng(0)
    for model in models:
        user = rng.standard_normal(model.dim, dtype=np.float32)
        model.score(user, rng.standard_normal((WARM_BATCH, model.dim), dtype=np.float32))
    return len(models)


async def warm_up(
    forwarder: Forwarder,
    embeddings: EmbeddingStore,
    models: list[ModelSession],
    limit_s: float = WARM_LIMIT_S,
    routes: list[CompiledRoute] | None = None,
    max_bytes: int = 8 << 20,
) -> Warmed:
    """The connections (concurrently) and the models, then the routes' sample pages,
    all bounded by ``limit_s``; never raises (a failure is a warning: the first request
    will do it)."""
    started = time.perf_counter()
    done = Warmed()
    origin = asyncio.ensure_future(_step("origin", warm_origin(forwarder), limit_s))
    redis = asyncio.ensure_future(_step("redis", warm_redis(embeddings), limit_s))
    await asyncio.sleep(0)  # both connects on their way before the models take the thread
    try:
        done.models = warm_models(models)
    except Exception as exc:  # the load's own warm run passed: this is not expected
        log.warning("warm-up: a model run failed: %s", exc)
    done.origin, done.redis = await asyncio.gather(origin, redis)
    left = limit_s - (time.perf_counter() - started)
    if routes and done.origin and done.redis and left > 0:

        async def pages() -> None:
            done.pages = await warm_pages(forwarder, embeddings, routes, max_bytes)

        await _step("sample pages", pages(), left)
    done.seconds = time.perf_counter() - started
    log.debug("warm-up in %.1f ms: %s", done.seconds * 1000, done)
    return done


async def _step(what: str, coro: object, limit_s: float) -> bool:
    try:
        async with asyncio.timeout(limit_s):
            await coro  # type: ignore[misc]
    except TimeoutError:
        log.warning("warm-up: %s did not answer within %.1f s; going on", what, limit_s)
        return False
    except Exception as exc:
        # Fail open: the first request opens the connection itself (or fails open).
        log.warning("warm-up: %s not reached (%s); going on", what, str(exc) or type(exc).__name__)
        return False
    return True
