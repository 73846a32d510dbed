"""The feed path: a response that a route names leaves re-ordered for its user.

Every reason not to re-rank serves the origin's status, headers and body bytes as they
came, with ``X-Rerank: skipped; reason=REASON``. Reasons (a fixed set, see README):

  no-user          no user id in the request's sources
  unknown-user     no valid embedding for the user
  control          the chosen arm is ``model: none`` (origin order on purpose)
  method           HEAD or another request that has no body to re-rank
  status           the origin answered other than 200
  not-json         the response is not JSON (Content-Type)
  too-large        the body is over feed.max_body_bytes
  encoding         an unsupported or broken Content-Encoding
  bad-json         the body does not parse as JSON
  unsafe-number    an integer beyond 64 bits, which re-serializing would round
  items-not-found  the items path is absent or not an array
  no-items         the array is empty
  no-item-vectors  none of the items has an embedding
  redis-timeout    Redis did not answer within redis.timeout_ms
  redis-unavailable / redis-error
  model-error      the model failed or returned non-finite scores
  budget           the route's budget_ms ran out
  plugin-error     a plugin's hook raised (or left its output malformed)
  internal-error   anything else (logged with a traceback)

When a plugin caused the skip (plugin-error, budget, or a redis-* reason from its own
Redis call), ``; plugin=NAME`` follows the reason, and the record's ``plugin`` says it.
A route without plugins runs none of the plugin code (no context is even made).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from typing import Any, TypeVar

import aiohttp
import numpy as np
import orjson
from aiohttp import web
from multidict import CIMultiDict

from plugins.context import FeedContext, ItemArray
from plugins.run import LoadedPlugin, PluginFailure, RoutePlugins
from proxy import bodycodec
from proxy.embeddings import EmbeddingError, EmbeddingStore
from proxy.experiments import RequestView
from proxy.forward import Forwarder, OriginError
from proxy.headers import append_token, end_to_end
from proxy.ranking import ItemsNotFound, arrange, dig, item_ids, reorder
from proxy.record import RequestRecord
from proxy.sessions import ModelSession
from proxy.snapshot import CompiledRoute, Snapshot
from proxy.users import resolve_user

log = logging.getLogger("rankgate.feed")

# A user-specific body must be built from a full origin answer, not a 304 for the
# version some cache holds; these are dropped upstream when a user is known.
CONDITIONAL = ("If-None-Match", "If-Modified-Since", "If-Match", "If-Range")
CHUNK = 64 * 1024
# orjson reads integers beyond 64 bits as floats and writes those with an exponent; only
# then is the (slow) scan of the original for such an integer needed.
_BIG_INT = re.compile(rb"(?<![\w.])-?\d{20,}(?![\w.])")


class Skip(Exception):
    def __init__(self, reason: str, plugin: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.plugin = plugin


def is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or mime.endswith("+json")


def private_cache_control(value: str | None) -> str:
    """The origin's Cache-Control made per-user: public/s-maxage go, private comes in."""
    if not value:
        return "private"
    keep = []
    for directive in value.split(","):
        d = directive.strip()
        name = d.split("=", 1)[0].strip().lower()
        if not d or name in ("public", "s-maxage", "private", "proxy-revalidate"):
            continue
        keep.append(d)
    return ", ".join(["private", *keep])


def server_timing(timings: dict[str, float], prior: str | None = None) -> str:
    names = {"inference": "infer"}
    ours = ", ".join(
        f"{names.get(k, k).replace(':', '-')};dur={v * 1000:.2f}" for k, v in timings.items()
    )
    return f"{prior}, {ours}" if prior else ours


T = TypeVar("T")


async def within(future: asyncio.Future[T], deadline: float, plugin: str | None = None) -> T:
    """The future's result if it is ready by the deadline, else Skip("budget").

    A future still running is left to finish on its own (Redis calls are bounded by
    redis.timeout_ms, and a late item lookup still fills the cache)."""
    if not future.done():
        # A waiter woken by whichever comes first: asyncio.wait() does the same with
        # sets and a counter, 2-7 us more per wait (measured on uvloop).
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        timer = loop.call_at(deadline, _wake, waiter)
        callback = functools.partial(_wake, waiter)
        future.add_done_callback(callback)
        try:
            await waiter
        finally:
            timer.cancel()
            future.remove_done_callback(callback)
        if not future.done():
            future.add_done_callback(_consume)
            raise Skip("budget", plugin)
    return future.result()


def _wake(waiter: asyncio.Future[None], _: object = None) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _consume(future: asyncio.Future[object]) -> None:
    # Read a late failure so asyncio does not log "exception was never retrieved".
    if not future.cancelled():
        future.exception()


class FeedPipeline:
    def __init__(
        self,
        forwarder: Forwarder,
        embeddings: EmbeddingStore,
        max_body_bytes: int,
        thread_min_items: int,
    ) -> None:
        self.forwarder = forwarder
        self.embeddings = embeddings
        self.max_body_bytes = max_body_bytes
        self.thread_min_items = thread_min_items

    async def handle(
        self,
        request: web.BaseRequest,
        route: CompiledRoute,
        snapshot: Snapshot,
        record: RequestRecord,
    ) -> web.StreamResponse:
        timings = record.timings
        view = RequestView(request.headers, request.cookies, request.query)
        plugins = route.plugins
        ctx: FeedContext | None = None
        failed: PluginFailure | None = None
        if plugins.active:
            embeddings = self.embeddings
            ctx = FeedContext(
                request, view, route.name, timings, embeddings.client, embeddings.link.command
            )
        if plugins.user:
            assert ctx is not None
            try:
                user_id = plugins.resolve_user(ctx)
            except PluginFailure as exc:
                user_id, failed = None, exc
        else:
            user_id = resolve_user(route.user_sources, view)
        arm = route.arms.choose(view, user_id)
        record.route, record.model, record.arm, record.user_id = (
            route.name,
            arm.model,
            arm.name,
            user_id,
        )
        if ctx is not None:
            ctx.user_id, ctx.arm, ctx.model = user_id, arm.name, arm.model
        model = snapshot.models.get(arm.model)

        skip: str | None = None
        if request.method == "HEAD":
            skip = "method"
        elif model is None:
            skip = "control"
        elif failed is not None:
            skip, record.plugin = failed.reason, failed.plugin
        elif user_id is None:
            skip = "no-user"

        user_task: asyncio.Task[np.ndarray | None] | None = None
        if skip is None and user_id is not None:
            # On the wire before the origin request, so the two overlap.
            user_task = asyncio.create_task(self._user(user_id, timings))
        t0 = time.perf_counter()
        try:
            try:
                upstream = await self.forwarder.open(
                    request, CONDITIONAL if user_task is not None else ()
                )
            finally:
                timings["origin"] = time.perf_counter() - t0
            return await self._respond(
                request, route, record, upstream, model, user_task, skip, ctx
            )
        finally:
            if user_task is not None and not user_task.done():
                user_task.cancel()

    async def _user(self, user_id: str, timings: dict[str, float]) -> np.ndarray | None:
        started = time.perf_counter()
        try:
            return await self.embeddings.user(user_id)
        finally:
            timings["redis"] = timings.get("redis", 0.0) + time.perf_counter() - started

    async def _respond(
        self,
        request: web.BaseRequest,
        route: CompiledRoute,
        record: RequestRecord,
        upstream: aiohttp.ClientResponse,
        model: ModelSession | None,
        user_task: asyncio.Task[np.ndarray | None] | None,
        skip: str | None,
        ctx: FeedContext | None,
    ) -> web.StreamResponse:
        encoding = bodycodec.normalize(upstream.headers.get("Content-Encoding"))
        declared = upstream.headers.get("Content-Length")
        if skip is None:
            if upstream.status != 200:
                skip = "status"
            elif not is_json(upstream.headers.get("Content-Type")):
                skip = "not-json"
            elif encoding not in bodycodec.SUPPORTED:
                skip = "encoding"
            elif (
                declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes
            ):
                skip = "too-large"
        if skip is not None:
            return await self._stream_skipped(request, route, record, upstream, skip)

        body = bytearray()
        try:
            async for chunk in upstream.content.iter_chunked(CHUNK):
                body += chunk
                if len(body) > self.max_body_bytes:
                    # Too big to buffer: what we have goes first, the rest streams.
                    return await self._stream_skipped(
                        request, route, record, upstream, "too-large", bytes(body)
                    )
        except (aiohttp.ClientError, TimeoutError):
            upstream.close()
            raise OriginError(502, "origin_error", "the origin broke off the response") from None
        finally:
            upstream.release()
        record.timings["origin"] = time.perf_counter() - record.started
        origin_body = bytes(body)

        assert model is not None and user_task is not None
        started = time.perf_counter()
        # The budget counts our own work after the origin's body is in. It is enforced
        # by deadlines, not cancellation: redis-py does not honour cancelling a command.
        deadline = asyncio.get_running_loop().time() + route.spec.budget_ms / 1000.0
        try:
            new_body, count, scored = await self._rerank(
                origin_body, encoding, route, model, user_task, deadline, record.timings, ctx
            )
        except Skip as exc:
            skip, record.plugin = exc.reason, exc.plugin
        except PluginFailure as exc:
            skip, record.plugin = exc.reason, exc.plugin
        except EmbeddingError as exc:
            skip = exc.reason
        except Exception:
            log.exception("re-ranking failed on route %s", route.name)
            skip = "internal-error"
        record.timings["rerank"] = time.perf_counter() - started
        headers = self.forwarder.response_headers(upstream)
        del headers["Content-Length"]
        if skip is not None:
            return self._buffered_skipped(route, record, upstream, headers, origin_body, skip)

        record.outcome, record.items, record.scored = "applied", count, scored
        headers.popall("ETag", None)
        headers["Cache-Control"] = private_cache_control(headers.get("Cache-Control"))
        append_token(headers, "Vary", route.vary)
        headers["X-Rerank"] = f"applied; model={record.model}; arm={record.arm}"
        record.timings["total"] = time.perf_counter() - record.started
        headers["Server-Timing"] = server_timing(record.timings, headers.get("Server-Timing"))
        record.status, record.bytes_out = upstream.status, len(new_body)
        return web.Response(
            status=upstream.status, reason=upstream.reason, headers=headers, body=new_body
        )

    async def _rerank(
        self,
        origin_body: bytes,
        encoding: str,
        route: CompiledRoute,
        model: ModelSession,
        user_task: asyncio.Task[np.ndarray | None],
        deadline: float,
        timings: dict[str, float],
        ctx: FeedContext | None,
    ) -> tuple[bytes, int, int]:
        try:
            raw = bodycodec.decode(origin_body, encoding, self.max_body_bytes)
        except bodycodec.CodecError:
            raise Skip("encoding") from None
        try:
            doc: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise Skip("bad-json") from None
        plugins = route.plugins
        if plugins.items is None:
            try:
                items = dig(doc, route.items_path)
            except ItemsNotFound:
                raise Skip("items-not-found") from None
            if not isinstance(items, list):
                raise Skip("items-not-found")
            if not items:
                raise Skip("no-items")
            arrays = [ItemArray(items, item_ids(items, route.id_path))]
            ids = arrays[0].ids
        else:
            assert ctx is not None
            ctx.doc = doc
            try:
                arrays = plugins.find_items(ctx)
            except ItemsNotFound:
                raise Skip("items-not-found") from None
            doc = ctx.doc
            if not any(arr.items for arr in arrays):
                raise Skip("no-items")
            ids = [ident for arr in arrays for ident in arr.ids]
        count = len(ids)

        user = await within(user_task, deadline)
        if user is None:
            raise Skip("unknown-user")
        # Usually every item has an id: then the id list is looked up as it is.
        with_ids = None if None not in ids else [p for p, i in enumerate(ids) if i is not None]
        if with_ids == []:
            raise Skip("no-item-vectors")
        pending: list[tuple[LoadedPlugin, asyncio.Future[None]]] = []
        if ctx is not None and plugins.rules:
            # Plugin I/O (e.g. a Redis set) runs alongside the item-embedding lookup.
            ctx.found = arrays
            pending = plugins.start_prefetch(ctx)
        try:
            started = time.perf_counter()
            wanted = ids if with_ids is None else [ids[p] for p in with_ids]
            lookup = self.embeddings.lookup(wanted)  # type: ignore[arg-type]
            if lookup.result is not None:
                have, vectors = lookup.result  # all cached: no task, no loop turn
            else:
                have, vectors = await within(
                    asyncio.ensure_future(self.embeddings.complete(lookup)), deadline
                )
            timings["redis"] = timings.get("redis", 0.0) + time.perf_counter() - started
            if have.size == 0:
                raise Skip("no-item-vectors")
            positions = have if with_ids is None else np.asarray(with_ids, dtype=np.intp)[have]
            for plugin, future in pending:
                waited = time.perf_counter()
                try:
                    await within(future, deadline, plugin.name)
                finally:
                    key = plugin.timing_key
                    timings[key] = timings.get(key, 0.0) + time.perf_counter() - waited
        finally:
            for _, future in pending:
                if not future.done():
                    future.add_done_callback(_consume)

        started = time.perf_counter()
        try:
            if len(positions) >= self.thread_min_items:
                # ORT releases the GIL: a big batch must not stall other requests.
                scores = await within(
                    asyncio.ensure_future(asyncio.to_thread(model.score, user, vectors)), deadline
                )
            else:
                scores = model.score(user, vectors)
        except Skip:
            raise
        except Exception as exc:
            log.warning(
                "model %s failed: %s", model.name, str(exc).splitlines()[0] if str(exc) else exc
            )
            raise Skip("model-error") from None
        finally:
            timings["inference"] = time.perf_counter() - started
        if not np.isfinite(scores).all():
            raise Skip("model-error")

        if ctx is None or not plugins.rules:
            if len(arrays) == 1:
                ranked = reorder(arrays[0].items, positions, scores)
                if asyncio.get_running_loop().time() > deadline:
                    raise Skip("budget")
                self._put(plugins, arrays[0], ranked, ctx)
            else:
                for arr, pos, sc, _ in _split(arrays, positions, scores, vectors):
                    self._put(plugins, arr, reorder(arr.items, pos, sc), ctx)
                if asyncio.get_running_loop().time() > deadline:
                    raise Skip("budget")
        else:
            ctx.user_embedding = user
            for arr, pos, sc, vec in _split(arrays, positions, scores, vectors):
                ranked = _apply_rules(plugins, ctx, arr, pos, sc, vec, deadline)
                self._put(plugins, arr, ranked, ctx)
        out = orjson.dumps(doc)
        # A "+" is rare in JSON text and found by memchr; "e+" alone is a slow scan when
        # the text is full of "e"s (11 us for the bench's 12 KB feed).
        if b"+" in out and b"e+" in out and _BIG_INT.search(raw):
            raise Skip("unsafe-number")
        self.embeddings.remember(lookup)  # served re-ranked: only now is the list cached
        return bodycodec.encode(out, encoding), count, int(positions.size)

    @staticmethod
    def _put(
        plugins: RoutePlugins, arr: ItemArray, ranked: list[Any], ctx: FeedContext | None
    ) -> None:
        if arr.put is None:
            arr.items[:] = ranked  # the list inside the document: re-ordered in place
        else:
            assert ctx is not None
            plugins.put(arr, ranked, ctx)

    def _skip_headers(
        self, route: CompiledRoute, record: RequestRecord, headers: CIMultiDict[str], reason: str
    ) -> None:
        record.outcome = "control" if reason == "control" else "skipped"
        record.reason = reason
        # The same URL is re-ranked for other users: caches must key on what chose that.
        append_token(headers, "Vary", route.vary)
        label = f"skipped; reason={reason}"
        if reason == "control":
            label += f"; model=none; arm={record.arm}"
        if record.plugin is not None:
            label += f"; plugin={record.plugin}"
        headers["X-Rerank"] = label
        record.timings["total"] = time.perf_counter() - record.started
        headers["Server-Timing"] = server_timing(record.timings, headers.get("Server-Timing"))

    async def _stream_skipped(
        self,
        request: web.BaseRequest,
        route: CompiledRoute,
        record: RequestRecord,
        upstream: aiohttp.ClientResponse,
        reason: str,
        first: bytes = b"",
    ) -> web.StreamResponse:
        headers = end_to_end(upstream.headers)
        self._skip_headers(route, record, headers, reason)
        record.status = upstream.status
        return await self.forwarder.stream_back(request, upstream, headers, first)

    def _buffered_skipped(
        self,
        route: CompiledRoute,
        record: RequestRecord,
        upstream: aiohttp.ClientResponse,
        headers: CIMultiDict[str],
        body: bytes,
        reason: str,
    ) -> web.Response:
        self._skip_headers(route, record, headers, reason)
        record.status, record.bytes_out = upstream.status, len(body)
        return web.Response(
            status=upstream.status, reason=upstream.reason, headers=headers, body=body
        )


def _split(
    arrays: list[ItemArray], positions: np.ndarray, scores: np.ndarray, vectors: np.ndarray
) -> list[tuple[ItemArray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per array: its scored positions (local), scores and vectors. ``positions`` index
    the arrays' items end to end, ascending, so each array's share is one slice."""
    if len(arrays) == 1:
        return [(arrays[0], positions, scores, vectors)]
    out = []
    offset = 0
    for arr in arrays:
        lo, hi = np.searchsorted(positions, (offset, offset + len(arr.items)))
        out.append((arr, positions[lo:hi] - offset, scores[lo:hi], vectors[lo:hi]))
        offset += len(arr.items)
    return out


def _apply_rules(
    plugins: RoutePlugins,
    ctx: FeedContext,
    arr: ItemArray,
    positions: np.ndarray,
    scores: np.ndarray,
    vectors: np.ndarray,
    deadline: float,
) -> list[Any]:
    n = len(arr.items)
    unscored = np.ones(n, dtype=bool)
    unscored[positions] = False
    ctx.items, ctx.ids, ctx.positions = arr.items, arr.ids, positions
    ctx.embeddings, ctx.scores = vectors, np.array(scores, dtype=np.float32).reshape(-1)
    ctx.fixed, ctx.dropped, ctx.order = unscored.copy(), np.zeros(n, dtype=bool), None
    plugins.rerank(ctx, deadline)
    # Unscored items cannot be ranked whatever a rule did to ``fixed``.
    return arrange(arr.items, positions, ctx.scores, ctx.fixed | unscored, ctx.dropped, ctx.order)
