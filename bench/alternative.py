"""The alternative to rankgate a team would build: a ranking service, called by the origin.

Two processes, as that team would run them:

- ``service``: a FastAPI app on uvicorn (one worker; uvloop and httptools, which
  ``uvicorn[standard]`` brings and uvicorn picks by itself), one ONNX Runtime session made
  at start with the model file and session options rankgate uses, and redis.asyncio
  (hiredis) on the same Valkey and keys as rankgate (``emb:user:{id}``,
  ``emb:item:{id}``). ``POST /rank`` takes ``{"user", "ids"}`` and answers the ids in
  served order: one pipeline round trip (GET of the user, MGET of the items), one
  ``run()``, a stable sort by descending score; items without a vector keep their slots
  (rankgate's rule, ``proxy/feed/ranking.py``); an unknown user gets the ids as sent.
- ``origin``: an aiohttp origin like ``bench/origin.py`` whose ``/api/feed`` builds the
  page, POSTs its ids and the user (``X-User-Id``) to the service, re-orders the items
  and answers; on an error or past ``--budget-ms`` it serves the page unranked (fail
  open). ``/api/feed/unranked`` serves the same page without calling the service: the
  difference of the two is what ranking adds, as rankgate's added figure is its p50 minus
  the origin's. ``X-Rerank`` says ``applied`` or ``skipped: REASON``.

    python bench/alternative.py service --port 0 --redis URL [--model FILE]
    python bench/alternative.py origin --port 0 --service http://127.0.0.1:PORT

Each prints ``port N`` on its first line once it listens. The service needs the
``bench`` extra (``pip install -e '.[bench]'``; ``make bench`` installs it).
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
from aiohttp import web
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: the repository's models package
    sys.path.insert(0, str(ROOT))

from models.contract import ITEM_INPUT, USER_INPUT, session_options  # noqa: E402

F32 = np.dtype("<f4")
USER_KEY = "emb:user:{}"
ITEM_KEY = "emb:item:{}"


# The endpoint's body and answer, at module level: FastAPI resolves the handler's
# (string) annotations in this module's globals.
class RankRequest(BaseModel):
    user: str
    ids: list[str]


class RankResponse(BaseModel):
    ids: list[str]
    ranked: bool


def ranked_ids(
    session: Any, dim: int, ids: list[str], user_raw: bytes | None, item_raws: list[Any]
) -> list[str] | None:
    """The ids in served order, or None when the user has no (valid) vector."""
    nbytes = dim * 4
    if not isinstance(user_raw, bytes) or len(user_raw) != nbytes:
        return None
    have = [k for k, raw in enumerate(item_raws) if isinstance(raw, bytes) and len(raw) == nbytes]
    if not have:
        return list(ids)
    items = np.frombuffer(b"".join(item_raws[k] for k in have), dtype=F32).reshape(-1, dim)
    users = np.repeat(np.frombuffer(user_raw, dtype=F32).reshape(1, dim), len(have), axis=0)
    scores = session.run(None, {USER_INPUT: users, ITEM_INPUT: items})[0].reshape(-1)
    order = np.argsort(-scores, kind="stable")
    slots = list(ids)
    for slot, pick in zip(have, order.tolist(), strict=True):
        slots[slot] = ids[have[pick]]
    return slots


def service_app(model: Path, redis_url: str, timeout_ms: float) -> Any:
    """The FastAPI ranking service (fastapi, redis.asyncio and onnxruntime imported here:
    the origin needs none of them)."""
    import onnxruntime as ort
    import redis.asyncio as aioredis
    from fastapi import FastAPI, HTTPException

    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        session = ort.InferenceSession(
            str(model), sess_options=session_options(), providers=["CPUExecutionProvider"]
        )
        dim = next(i.shape[1] for i in session.get_inputs() if i.name == USER_INPUT)
        warm = np.zeros((100, dim), dtype=np.float32)  # no request pays for allocations
        session.run(None, {USER_INPUT: warm, ITEM_INPUT: warm})
        timeout = timeout_ms / 1000
        client = aioredis.Redis.from_url(
            redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        await client.ping()
        state.update(session=session, dim=dim, redis=client)
        yield
        await client.aclose()

    app = FastAPI(lifespan=lifespan)

    @app.post("/rank")
    async def rank(request: RankRequest) -> RankResponse:
        if not request.ids:
            return RankResponse(ids=[], ranked=False)
        pipe = state["redis"].pipeline(transaction=False)
        pipe.get(USER_KEY.format(request.user))
        pipe.mget([ITEM_KEY.format(i) for i in request.ids])
        try:
            user_raw, item_raws = await pipe.execute()
        except Exception as exc:  # redis-py's errors and timeouts: the origin fails open
            raise HTTPException(503, f"redis: {type(exc).__name__}") from None
        order = ranked_ids(state["session"], state["dim"], request.ids, user_raw, item_raws)
        return RankResponse(ids=order or request.ids, ranked=order is not None)

    return app


def page_items(n: int) -> list[dict[str, Any]]:
    """The page bench/origin.py serves, as the origin's own objects."""
    from origin import feed_body

    return list(orjson.loads(feed_body(n))["items"])


def origin_app(service: str, items: int, budget_ms: float) -> web.Application:
    page = page_items(items)
    timeout = aiohttp.ClientTimeout(total=budget_ms / 1000)

    async def start(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession(timeout=timeout)

    async def stop(app: web.Application) -> None:
        await app["session"].close()

    def respond(served: list[dict[str, Any]], outcome: str) -> web.Response:
        body = orjson.dumps({"meta": {"page": 1, "count": len(served)}, "items": served})
        return web.Response(
            body=body, content_type="application/json", headers={"X-Rerank": outcome}
        )

    async def ranked(request: web.Request) -> web.Response:
        items = list(page)  # the page as the origin builds it
        ask = {"user": request.headers.get("X-User-Id", ""), "ids": [it["id"] for it in items]}
        try:
            async with request.app["session"].post(
                f"{service}/rank",
                data=orjson.dumps(ask),
                headers={"Content-Type": "application/json"},
            ) as resp:
                if resp.status != 200:
                    return respond(items, f"skipped: service-{resp.status}")
                answer = orjson.loads(await resp.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            return respond(items, f"skipped: {type(exc).__name__}")
        if not answer["ranked"]:
            return respond(items, "skipped: unknown-user")
        by_id = {it["id"]: it for it in items}
        return respond([by_id[i] for i in answer["ids"]], "applied")

    async def unranked(request: web.Request) -> web.Response:
        return respond(list(page), "skipped: not-asked")

    app = web.Application()
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_get("/api/feed", ranked)
    app.router.add_get("/api/feed/unranked", unranked)
    return app


def listen(port: int) -> socket.socket:
    """A listening socket (port 0: any free one), its port printed for whoever started
    us: connections made from then on wait in its backlog until the server accepts."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    print(f"port {sock.getsockname()[1]}", flush=True)
    return sock


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["service", "origin"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model", default=str(ROOT / "models" / "ranker_v1.onnx"))
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--service", default="http://127.0.0.1:8001")
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--budget-ms", type=float, default=50.0)
    args = parser.parse_args()
    if args.role == "service":
        import uvicorn

        app = service_app(Path(args.model), args.redis, args.budget_ms)
        # loop/http "auto": uvloop and httptools, as uvicorn[standard] installs them.
        config = uvicorn.Config(app, workers=1, log_level="warning", access_log=False)
        uvicorn.Server(config).run(sockets=[listen(args.port)])
        return 0
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    app = origin_app(args.service.rstrip("/"), args.items, args.budget_ms)
    web.run_app(app, sock=listen(args.port), access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
