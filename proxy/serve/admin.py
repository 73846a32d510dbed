"""The admin listener: metrics, health, readiness, the active routes, reloads.

One implementation for one process or a fleet of workers: the app asks a backend, which
is ``LocalAdmin`` in a serving process and ``proxy.serve.fleet.FleetAdmin`` in a supervisor.
It never shares the public port. ``/admin/*`` takes an optional bearer token.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import parse_qsl

import aiohttp
import orjson
from aiohttp import web
from multidict import MultiDict

from plugins.context import MAX_USER_ID
from proxy.experiments.assignments import Assignments
from proxy.feed.explain import explain
from proxy.outcome.errors import RankgateError
from proxy.routing.current import ReloadOutcome
from proxy.serve.metrics import CONTENT_TYPE, Metrics
from proxy.serve.runtime import ServingState

Json = dict[str, Any]
Answer = tuple[int, Json]


class AdminBackend(Protocol):
    token: str | None

    async def healthz(self) -> Json: ...

    async def readyz(self) -> Answer: ...

    async def metrics(self) -> bytes: ...

    async def admin(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        """``/admin/*`` (path with its query string)."""
        ...


BACKEND_KEY: web.AppKey[AdminBackend] = web.AppKey("admin-backend")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[BACKEND_KEY].token
    if token and request.path.startswith("/admin/"):
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return web.json_response(
                {"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"}
            )
    return await handler(request)


def _json(status: int, body: Json) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


async def _healthz(request: web.Request) -> web.Response:
    return _json(200, await request.app[BACKEND_KEY].healthz())


async def _readyz(request: web.Request) -> web.Response:
    return _json(*await request.app[BACKEND_KEY].readyz())


async def _metrics(request: web.Request) -> web.Response:
    body = await request.app[BACKEND_KEY].metrics()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def _admin(request: web.Request) -> web.Response:
    backend = request.app[BACKEND_KEY]
    headers = {k: v for k, v in request.headers.items() if k.lower() == "authorization"}
    body = await request.read()
    return _json(*await backend.admin(request.method, request.rel_url.raw_path_qs, headers, body))


def build_admin_app(backend: AdminBackend) -> web.Application:
    app = web.Application(middlewares=[_auth])
    app[BACKEND_KEY] = backend
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_route("*", "/admin/{tail:.*}", _admin)
    return app


# -- one serving process ---------------------------------------------------------------


class LocalAdmin:
    """The admin answers of this process, from its serving state."""

    def __init__(
        self,
        state: ServingState,
        metrics: Metrics,
        token: str | None,
        assignments: Assignments | None = None,
    ) -> None:
        self.state = state
        self._metrics = metrics
        self.token = token
        self.assignments = assignments or Assignments()
        # /admin/* by (method, path): later features add theirs here.
        self.handlers: dict[tuple[str, str], Callable[[], Awaitable[Answer]]] = {
            ("GET", "/admin/routes"): self.routes,
            ("POST", "/admin/reload"): self.reload,
            ("GET", "/admin/experiments"): self.experiments,
        }
        # Those that read the query string.
        self.query_handlers: dict[tuple[str, str], Callable[[str], Awaitable[Answer]]] = {
            ("GET", "/admin/explain"): self.explain,
        }

    async def healthz(self) -> Json:
        """Liveness: the process serves. Stays 200 while draining (do not kill a drain)."""
        return {
            "status": "ok",
            "pid": os.getpid(),
            "draining": self.state.draining,
            "uptime_s": round(time.time() - self.state.started_at, 3),
        }

    async def readyz(self) -> Answer:
        """Readiness: routes and models loaded and warmed, listening, not draining.

        Redis is reported in the body. It fails readiness only with
        ``admin.readyz_requires_redis``: without Redis the proxy still serves every page
        (in the origin's order), and a shared Redis outage would otherwise take every
        replica out of the load balancer at once.
        """
        state, runtime = self.state, self.state.runtime
        problems: dict[str, str] = {}
        redis = "not connected yet"
        if state.draining:
            problems["draining"] = "shutting down"
            redis = "not checked while draining"
        elif runtime is None or state.ready_at is None:
            problems["snapshot"] = "routes and models not loaded yet"
        else:
            redis = await _redis_status(runtime.embeddings.ping)
            if redis != "ok" and runtime.settings.admin.readyz_requires_redis:
                problems["redis"] = redis
        snapshot = runtime.store.current if runtime is not None else None
        body = {
            "ready": not problems,
            "draining": state.draining,
            "snapshot_version": snapshot.version if snapshot is not None else 0,
            "models": sorted(snapshot.models) if snapshot is not None else [],
            "redis": redis,
            "problems": problems,
            "pid": os.getpid(),
        }
        return (200 if not problems else 503), body

    async def metrics(self) -> bytes:
        return self._metrics.render()

    async def admin(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        bare = path.split("?", 1)[0]
        handler = self.handlers.get((method, bare))
        reader = self.query_handlers.get((method, bare))
        if handler is None and reader is None:
            if any(p == bare for _, p in (*self.handlers, *self.query_handlers)):
                return 405, {"error": f"method {method} not allowed on {bare}"}
            return 404, {"error": f"no admin endpoint {bare}"}
        if self.state.runtime is None:
            return 503, {"error": "not ready: routes and models are loading"}
        return await handler() if handler is not None else await reader(path)  # type: ignore[misc]

    async def routes(self) -> Answer:
        """The active snapshot, and whether the files on disk are what it serves."""
        assert self.state.runtime is not None
        store = self.state.runtime.store
        last = store.last_outcome
        active = store.current.describe()
        probes = self.state.runtime.probes
        warnings: list[str] = []
        if probes is not None and probes.version == store.current.version:
            # The sample page of each route, probed after the reload that swapped it in.
            for route in active["routes"]:  # type: ignore[attr-defined]
                route["sample_probe"] = probes.describe(route["name"])
            warnings = probes.warnings()
        return 200, {
            "version": store.current.version,
            "active": active,
            # Routes that, by their sample page, would never re-rank (the reload was taken).
            "warnings": warnings,
            "last_reload_at": store.last_reload_at,
            # Set while the newest file on disk is refused (the active version serves).
            "last_error": store.last_error,
            "last_error_at": store.last_error_at,
            "last_attempt": None if last is None else describe_outcome(last),
            "reloads": dict(store.reload_counts),
            "watch": store.watch_mode,
            # routes_source: redis: the version served, the one stored, the live fleet.
            **({"redis": await store.describe_source()} if store.describe_source else {}),
        }

    async def experiments(self) -> Answer:
        """Live assignment counts per route and arm, and the sample ratio test."""
        assert self.state.runtime is not None
        runtime = self.state.runtime
        view = self.assignments.describe(runtime.store.current)
        guard = runtime.guard.describe() if runtime.guard is not None else []
        bandits = runtime.guard.bandits.describe() if runtime.guard is not None else []
        return 200, {**view, "guardrails": guard, "bandits": bandits, "pid": os.getpid()}

    async def explain(self, path: str) -> Answer:
        """``?user=ID&path=/feed?query`` (and ``header=Name: value``, ``cookie=name=value``,
        repeatable): the page asked from the origin as that user, and why it is served in
        its order (proxy/feed/explanation.py)."""
        assert self.state.runtime is not None
        query = MultiDict(parse_qsl(path.partition("?")[2]))
        user, target = query.get("user", ""), query.get("path", "")
        if not user or len(user) > MAX_USER_ID or not target.startswith("/") or len(target) > 8192:
            return 400, {"error": "want ?user=ID&path=/path/of/the/feed (user up to 256 chars)"}
        headers = dict(h.partition(":")[::2] for h in query.getall("header", ()))
        cookies = dict(c.partition("=")[::2] for c in query.getall("cookie", ()))
        runtime = self.state.runtime
        try:
            report = await explain(
                runtime.feed,
                runtime.store.current,
                target,
                user,
                {k.strip(): v.strip() for k, v in headers.items()},
                cookies,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return 502, {"error": f"the origin did not answer: {type(exc).__name__}: {exc}"}
        return 200, report

    async def reload(self) -> Answer:
        """Reload now: 200 with result ok or unchanged, 422 (old version serving) on error."""
        assert self.state.runtime is not None
        outcome = await self.state.runtime.store.reload_outcome("admin")
        body = {"reloaded": outcome.result != "error", **describe_outcome(outcome)}
        return (422 if outcome.result == "error" else 200), body


async def _redis_status(ping: Callable[[], Awaitable[None]]) -> str:
    """The string ok, or why Redis does not answer (as the feed path names it)."""
    try:
        await ping()
    except RankgateError as exc:
        return f"{exc.reason}: {exc.detail}"
    except Exception as exc:
        return f"redis-error: {exc!r}"
    return "ok"


def describe_outcome(outcome: ReloadOutcome) -> Json:
    return {
        "result": outcome.result,
        "trigger": outcome.trigger,
        "version": outcome.version,
        "error": outcome.error,
        "reason": outcome.reason,  # why refused: a rankgate_routes_refused_total label
        "seconds": round(outcome.seconds, 4),
        "at": outcome.at,
    }
