"""The feed path: a response that a route names leaves re-ordered for its user.

One ``FeedRequest`` holds a request's state; the stages are plain functions over it, in
the order they run:

    before the origin (this module)   resolve_user -> choose_arm -> check_request
                                      -> start_user_lookup (on the wire before the origin)
    the origin (this module)          call_origin -> gate -> read_body
    after the body (proxy.feed.rerank)     decode -> find_items -> user_vector -> item_vectors
                                      -> score -> arrange -> encode
    the response (proxy.feed.respond)      applied | buffered_skipped | stream_skipped

Any stage may raise a ``RankgateError`` (``proxy.outcome.errors``): the origin's status, headers
and body bytes are then served as they came, with ``X-Rerank: skipped; reason=REASON``.
A reason found before the origin answers (no user, a control arm) still calls the
origin and streams its answer; one found after the body is in serves the buffered body.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import numpy as np
from aiohttp import web

from plugins.context import FeedContext, RequestView
from plugins.run import PluginFailure
from proxy.feed import explanation, rerank
from proxy.feed.respond import applied, buffered_skipped, is_json, stream_skipped
from proxy.feed.state import FeedRequest, FeedServices, new_request_id
from proxy.http import codec
from proxy.outcome.ending import send
from proxy.outcome.errors import (
    BodyError,
    OriginError,
    Outcome,
    RankgateError,
    Reason,
    Skip,
    from_plugin,
)
from proxy.outcome.record import RequestRecord, mark
from proxy.routing.arms import Arm
from proxy.routing.snapshot import CompiledRoute, Snapshot
from proxy.store.embeddings import EmbeddingStore

log = logging.getLogger("rankgate.feed")

# A user-specific body must be built from a full origin answer, not a 304 for the
# version some cache holds; these are dropped upstream when a user is known.
CONDITIONAL = ("If-None-Match", "If-Modified-Since", "If-Match", "If-Range")
CHUNK = 64 * 1024

__all__ = ["FeedRequest", "FeedServices", "handle"]


async def handle(
    svc: FeedServices,
    request: web.BaseRequest,
    route: CompiledRoute,
    snapshot: Snapshot,
    record: RequestRecord,
) -> web.StreamResponse:
    st = FeedRequest(svc, request, route, snapshot, record, _context(svc, request, route, record))
    token = svc.explain_token
    if token is not None and explanation.wanted(request.headers, token):
        st.explains = []  # an operator's request: its explanation goes in a header
    recorder = svc.recorder
    if recorder is not None:
        recorder.start(st)
    try:
        before_origin(st)
        await call_origin(st)
        # Sent here, not after returning: a client that has left is seen as such, and
        # what follows the response (its record, a shadow) follows it indeed.
        response = await send(request, await answer(st))
    finally:
        task = st.user_task
        if task is not None:
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()  # read: a lookup that failed unawaited is not "never retrieved"
    after_response(st)
    return response


def after_response(st: FeedRequest) -> None:
    """The exposure record, after the shadow model when one runs for this request."""
    recorder, shadows = st.svc.recorder, st.svc.shadows
    shadow = None
    if shadows is not None and st.record.outcome is Outcome.APPLIED:
        shadow = shadows.wanted(st)
    if shadow is not None:
        assert shadows is not None
        shadows.start(st, shadow, (lambda: recorder.emit(st)) if recorder else _nothing)
    elif recorder is not None:
        recorder.emit(st)
    if st.svc.guard is not None:
        st.svc.guard.exposed(st)


def _nothing() -> None:
    pass


async def answer(st: FeedRequest) -> web.StreamResponse:
    """The origin's answer, re-ranked or as it came."""
    assert st.upstream is not None
    if st.skip is None or _record_control(st):
        try:
            gate(st)
            await read_body(st)
        except BodyError as exc:  # an OriginError goes up: the client gets a 502
            if st.skip is None:
                st.skip = exc
    if st.skip is not None and not st.body_complete:
        token = _token(st)
        return await stream_skipped(
            st.svc.forwarder,
            st.request,
            st.record,
            st.upstream,
            st.route.vary,
            st.skip,
            st.body,
            token,
            _explained(st, st.skip),
        )
    response = await after_body(st)
    if st.explains is not None:
        response.headers.update(_explained(st, st.skip or _skipped(st.record)) or {})
    return response


def _skipped(record: RequestRecord) -> RankgateError | None:
    return None if record.reason is None else RankgateError(record.reason)


def _explained(st: FeedRequest, error: RankgateError | None) -> dict[str, str] | None:
    """The explanation header (and no-store: a debug answer is nobody's to keep)."""
    if st.explains is None:
        return None
    took = st.timings.get("rerank", 0.0)
    try:
        value = explanation.header_value(explanation.describe(st, error, took))
    except Exception:  # a debugging aid must never cost the response itself
        log.exception("explaining a request on route %s failed", st.route.name)
        return None
    return {explanation.EXPLANATION_HEADER: value, "Cache-Control": "private, no-store"}


def _record_control(st: FeedRequest) -> bool:
    """A control arm's served items are recorded too (its body read and parsed like a
    re-ranked one's, so both arms also carry the same latency): with exposures on."""
    skip = st.skip
    return st.svc.recorder is not None and skip is not None and skip.reason is Reason.CONTROL


def _token(st: FeedRequest) -> str | None:
    recorder = st.svc.recorder
    return recorder.token(st) if recorder is not None else None


def _context(
    svc: FeedServices, request: web.BaseRequest, route: CompiledRoute, record: RequestRecord
) -> FeedContext:
    view = RequestView(request.headers, request.cookies, request.query)
    embeddings = svc.embeddings
    record.route = route.name
    return FeedContext(
        request, view, route.name, record.timings, embeddings.client, embeddings.link.command
    )


# -- before the origin ---------------------------------------------------------------


def before_origin(st: FeedRequest) -> None:
    """User, arm and the reasons known from the request alone; the user's vector is
    then looked up while the origin is asked."""
    failure: RankgateError | None = None
    try:
        resolve_user(st)
    except RankgateError as exc:
        failure = exc
    choose_arm(st)
    try:
        check_request(st, failure)
    except RankgateError as exc:
        st.skip = exc
        return
    start_user_lookup(st)


def resolve_user(st: FeedRequest) -> None:
    try:
        user_id = st.route.plugins.resolve_user(st.ctx)
    except PluginFailure as exc:
        raise from_plugin(exc) from None
    st.ctx.user_id = st.record.user_id = user_id


def choose_arm(st: FeedRequest) -> None:
    ctx, record = st.ctx, st.record
    arm = st.arm = _steered(st, st.route.arms.choose(ctx.view, ctx.user_id))
    ctx.arm, ctx.model = record.arm, record.model = arm.name, arm.model
    models = st.snapshot.models
    st.model = models.get(arm.models[0])
    if arm.interleaved:
        others = [models.get(m) for m in arm.models[1:]]
        st.others = [m for m in others if m is not None]
        if len(st.others) < len(others):  # a missing model: not a fair comparison
            st.others = []
        if not st.request_id:  # the coin's seed, so the list can be rebuilt
            st.request_id = new_request_id()


def _steered(st: FeedRequest, arm: Arm) -> Arm:
    """The default arm in place of one a guardrail took off the air; a bandit's model."""
    guard = st.svc.guard
    if guard is not None and guard.moved(st.route.name, arm.name):
        st.moved_from = arm.name
        return st.route.arms.default
    picked = arm if guard is None else guard.pick(st.route.name, arm, st.ctx.user_id)
    if guard is not None and picked is not arm:  # a bandit's model: its record names its period
        st.bandit = guard.period(st.route.name, arm.name)
    return picked


def check_request(st: FeedRequest, failure: RankgateError | None) -> None:
    """The first reason not to re-rank, in order of what a person would fix first."""
    if st.request.method == "HEAD":
        raise Skip(Reason.METHOD)
    if st.model is None:
        raise Skip(Reason.CONTROL)
    if failure is not None:
        raise failure
    if st.ctx.user_id is None:
        raise Skip(Reason.NO_USER)


def start_user_lookup(st: FeedRequest) -> None:
    assert st.ctx.user_id is not None
    st.user_task = asyncio.create_task(_user_vector(st.svc.embeddings, st.ctx.user_id, st.record))


async def _user_vector(
    embeddings: EmbeddingStore, user_id: str, record: RequestRecord
) -> np.ndarray | None:
    timings = record.timings
    started = time.perf_counter()
    try:
        return await embeddings.user(user_id)
    finally:
        timings["redis"] = timings.get("redis", 0.0) + time.perf_counter() - started
        mark(record, "redis user", started)


# -- the origin ------------------------------------------------------------------------


async def call_origin(st: FeedRequest) -> None:
    """Send the request upstream; returns once the origin's headers are in."""
    started = time.perf_counter()
    trace = st.record.trace
    try:
        drop = CONDITIONAL if st.user_task is not None else ()
        traceparent = None if trace is None else trace.traceparent
        st.upstream = await st.svc.forwarder.open(st.request, drop, traceparent)
    finally:
        st.timings["origin"] = time.perf_counter() - started
        if trace is not None:
            mark(st.record, "origin", started)


def gate(st: FeedRequest) -> None:
    """Whether the origin's answer can be a feed, from its status and headers alone."""
    upstream = st.upstream
    assert upstream is not None
    headers = upstream.headers
    st.encoding = codec.normalize(headers.get("Content-Encoding"))
    declared = headers.get("Content-Length")
    if upstream.status != 200:
        raise BodyError(Reason.STATUS)
    if not is_json(headers.get("Content-Type")):
        raise BodyError(Reason.NOT_JSON)
    if st.encoding not in codec.SUPPORTED:
        raise BodyError(Reason.ENCODING)
    if declared is not None and declared.isdigit() and int(declared) > st.svc.max_body_bytes:
        raise BodyError(Reason.TOO_LARGE)


async def read_body(st: FeedRequest) -> None:
    """The whole body, up to feed.max_body_bytes. Past that, what was read is kept in
    ``st.body`` (to go first) and BodyError(too-large) streams the rest."""
    upstream = st.upstream
    assert upstream is not None
    # Joined once: a growing bytearray and its copy held the loop ~2 ms per MB (docs).
    chunks: list[bytes] = []
    size, started = 0, time.perf_counter()
    try:
        async for chunk in upstream.content.iter_chunked(CHUNK):
            chunks.append(chunk)
            size += len(chunk)
            if size > st.svc.max_body_bytes:
                st.body = b"".join(chunks)
                raise BodyError(Reason.TOO_LARGE)
    except (aiohttp.ClientError, TimeoutError):
        upstream.close()
        upstream.release()
        raise OriginError(Reason.ORIGIN_ERROR, "the origin broke off the response") from None
    upstream.release()
    st.body, st.body_complete = b"".join(chunks), True
    st.timings["origin"] = time.perf_counter() - st.record.started
    mark(st.record, "origin body", started)


# -- after the body ------------------------------------------------------------------


async def after_body(st: FeedRequest) -> web.StreamResponse:
    """Re-rank the buffered body within the route's budget, then answer."""
    upstream, record = st.upstream, st.record
    assert upstream is not None
    if st.skip is not None:  # a control arm whose items are recorded
        rerank.items_only(st)
        return buffered_skipped(record, upstream, st.route.vary, st.skip, st.body, _token(st))
    started = time.perf_counter()
    # The budget counts our own work after the origin's body is in.
    st.deadline = asyncio.get_running_loop().time() + st.route.spec.budget_ms / 1000.0
    why: RankgateError | None = None
    try:
        await rerank.run(st)
    except RankgateError as exc:
        # Without its traceback: kept in this frame, it would hold the frames (and the
        # body) in a cycle until a full collection, which tune_gc makes rare.
        why = exc.with_traceback(None)
    except Exception:
        log.exception("re-ranking failed on route %s", st.route.name)
        why = RankgateError(Reason.INTERNAL_ERROR)
    st.timings["rerank"] = time.perf_counter() - started
    token = _token(st)
    if why is not None:
        return buffered_skipped(record, upstream, st.route.vary, why, st.body, token)
    record.items, record.scored = len(st.ids), int(st.positions.size)
    return applied(record, upstream, st.route.vary, st.out, token)
