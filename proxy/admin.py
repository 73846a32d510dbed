"""The admin listener: metrics, health, readiness, the active routes snapshot, reloads.

It never shares the public port. ``/admin/*`` takes an optional bearer token.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy.app import RUNTIME_KEY, Runtime
from proxy.embeddings import EmbeddingError
from proxy.metrics import CONTENT_TYPE, Metrics
from proxy.snapshot import ReloadOutcome

METRICS_KEY: web.AppKey[Metrics] = web.AppKey("metrics")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[RUNTIME_KEY].settings.admin.token
    if token and request.path.startswith("/admin/"):
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return web.json_response(
                {"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"}
            )
    return await handler(request)


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process serves. Stays 200 while draining (do not kill a drain)."""
    runtime = request.app[RUNTIME_KEY]
    return web.json_response(
        {
            "status": "ok",
            "pid": os.getpid(),
            "draining": runtime.draining,
            "uptime_s": round(time.time() - runtime.started_at, 3),
        }
    )


async def redis_status(runtime: Runtime) -> str:
    """The string ok, or why Redis does not answer (as the feed path names it)."""
    try:
        await runtime.embeddings.ping()
    except EmbeddingError as exc:
        return f"{exc.reason}: {exc}"
    except Exception as exc:
        return f"redis-error: {exc!r}"
    return "ok"


async def readyz(request: web.Request) -> web.Response:
    """Readiness: routes and models loaded and warmed, listening, not draining.

    Redis is reported in the body. It fails readiness only with
    ``admin.readyz_requires_redis``: without Redis the proxy still serves every page
    (in the origin's order), and a shared Redis outage would otherwise take every
    replica out of the load balancer at once.
    """
    runtime = request.app[RUNTIME_KEY]
    problems: dict[str, str] = {}
    redis = "not connected yet"
    if runtime.draining:
        problems["draining"] = "shutting down"
        redis = "not checked while draining"
    elif not runtime.store.ready or runtime.ready_at is None:
        problems["snapshot"] = "routes and models not loaded yet"
    else:
        redis = await redis_status(runtime)
        if redis != "ok" and runtime.settings.admin.readyz_requires_redis:
            problems["redis"] = redis
    snapshot = runtime.store.current
    body = {
        "ready": not problems,
        "draining": runtime.draining,
        "snapshot_version": snapshot.version,
        "models": sorted(snapshot.models),
        "redis": redis,
        "problems": problems,
        "pid": os.getpid(),
    }
    return web.json_response(body, status=200 if not problems else 503)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS_KEY].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def routes(request: web.Request) -> web.Response:
    """The active snapshot, and whether the files on disk are what it serves."""
    store = request.app[RUNTIME_KEY].store
    last = store.last_outcome
    return web.json_response(
        {
            "version": store.current.version,
            "active": store.current.describe(),
            "last_reload_at": store.last_reload_at,
            # Set while the newest file on disk is refused (the active version serves).
            "last_error": store.last_error,
            "last_error_at": store.last_error_at,
            "last_attempt": None if last is None else _outcome(last),
            "reloads": dict(store.reload_counts),
            "watch": store.watch_mode,
            # routes_source: redis: the version served, the one stored, the live fleet.
            **({"redis": await store.describe_source()} if store.describe_source else {}),
        }
    )


def _outcome(outcome: ReloadOutcome) -> dict[str, object]:
    return {
        "result": outcome.result,
        "trigger": outcome.trigger,
        "version": outcome.version,
        "error": outcome.error,
        "seconds": round(outcome.seconds, 4),
        "at": outcome.at,
    }


async def reload(request: web.Request) -> web.Response:
    """Reload now: 200 with result ok or unchanged, 422 (old version serving) on error."""
    outcome = await request.app[RUNTIME_KEY].store.reload_outcome("admin")
    body = {"reloaded": outcome.result != "error", **_outcome(outcome)}
    return web.json_response(body, status=422 if outcome.result == "error" else 200)


def build_admin_app(runtime: Runtime, metrics_: Metrics | None = None) -> web.Application:
    app = web.Application(middlewares=[_auth])
    app[RUNTIME_KEY] = runtime
    if metrics_ is not None:
        app[METRICS_KEY] = metrics_
        app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/admin/routes", routes)
    app.router.add_post("/admin/reload", reload)
    return app
