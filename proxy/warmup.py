"""Start-up warm-up: what the first feed request would otherwise pay for itself.

Before a serving process reports ready, it opens one keep-alive connection to the
origin (left in the client's pool, no request sent: the origin sees an idle
connection, not a request it did not ask for), opens a Redis connection (one PING on
the hot-path link, which keeps it), and runs every model once on a feed-sized batch on
the event loop's thread, where small batches run (the load's own warm run is on a
loader thread). Measured with ``bench/run.py --only startup``: the first request cost
~5x a warm one without this.

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
from yarl import URL

from proxy.embeddings import EmbeddingStore
from proxy.forward import Forwarder
from proxy.sessions import WARM_BATCH, ModelSession

log = logging.getLogger("rankgate.warmup")

# The longest the warm-up may delay readiness: the start-up target is ready within 1 s.
WARM_LIMIT_S = 0.5


@dataclass(slots=True)
class Warmed:
    """What the warm-up did (each step is independent of the others)."""

    origin: bool = False
    redis: bool = False
    models: int = 0
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
) -> Warmed:
    """All three, the two connections concurrently, bounded by ``limit_s``; never
    raises (a failure is a warning: the first request will do it)."""
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
