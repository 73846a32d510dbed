"""The admin listener: health, readiness, the active routes snapshot and reloads.

It never shares the public port. ``/admin/*`` takes an optional bearer token.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy.app import RUNTIME_KEY, Runtime

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
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    problems: dict[str, str] = {}
    if runtime.draining:
        problems["draining"] = "shutting down"
    if not runtime.store.ready or runtime.ready_at is None:
        problems["snapshot"] = "routes and models not loaded yet"
    else:
        try:
            await runtime.embeddings.ping()
        except Exception as exc:
            problems["redis"] = str(exc)
    body = {
        "ready": not problems,
        "snapshot_version": runtime.store.current.version,
        "models": sorted(runtime.store.current.models),
        "problems": problems,
    }
    return web.json_response(body, status=200 if not problems else 503)


async def routes(request: web.Request) -> web.Response:
    store = request.app[RUNTIME_KEY].store
    return web.json_response(
        {
            "active": store.current.describe(),
            "last_reload_at": store.last_reload_at,
            "last_error": store.last_error,
            "last_error_at": store.last_error_at,
        }
    )


async def reload(request: web.Request) -> web.Response:
    store = request.app[RUNTIME_KEY].store
    ok = await store.reload("admin")
    return web.json_response(
        {"reloaded": ok, "version": store.current.version, "error": store.last_error},
        status=200 if ok else 422,
    )


def build_admin_app(runtime: Runtime) -> web.Application:
    app = web.Application(middlewares=[_auth])
    app[RUNTIME_KEY] = runtime
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/admin/routes", routes)
    app.router.add_post("/admin/reload", reload)
    return app
