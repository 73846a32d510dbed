"""The feed path after the origin's body is in: from bytes to a re-ordered body.

    decode -> find_items -> user_vector -> item_vectors (+ plugin prefetch) -> score
           -> arrange (rules plugins, or a stable sort by score) -> encode

Each stage reads and fills the request's ``FeedRequest`` (``proxy.feed.stages``) and raises a
``RankgateError`` to give up; the route's budget is checked at every wait and after
every rule. Only the order of the item arrays changes (unless a rules plugin says
otherwise): a route with a body plan splices the items' own bytes back
(``proxy.feed.splice``); any other re-serializes every value as it was parsed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import numpy as np
import orjson

from plugins.context import ItemArray, ItemsNotFound
from plugins.run import LoadedPlugin, PluginFailure
from proxy.feed import splice
from proxy.feed.budget import consume, past, within
from proxy.feed.interleave import multileave_slots, seed_of
from proxy.feed.ranking import served_order
from proxy.feed.state import FeedRequest
from proxy.http import codec
from proxy.outcome.errors import (
    BodyError,
    ItemsError,
    ModelError,
    RankgateError,
    Reason,
    Skip,
    from_plugin,
)
from proxy.outcome.record import mark
from proxy.routing.sessions import ModelSession

log = logging.getLogger("rankgate.feed")

# orjson reads integers beyond 64 bits as floats and writes those with an exponent; only
# then is the (slow) scan of the original for such an integer needed.
_BIG_INT = re.compile(rb"(?<![\w.])-?\d{20,}(?![\w.])")

Prefetch = list[tuple[LoadedPlugin, asyncio.Future[None]]]


async def run(st: FeedRequest) -> None:
    inflate(st)
    try:
        await _stages(st)
    finally:
        if st.ticket is not None:  # its place in a re-rank process, however it ended
            st.ticket.close()


async def _stages(st: FeedRequest) -> None:
    if not await offload_find(st):
        parse(st)
    find_items(st)
    await user_vector(st)
    # Plugin I/O (e.g. a Redis set) runs alongside the item-embedding lookup.
    pending = start_prefetch(st)
    try:
        await item_vectors(st)
        await finish_prefetch(st, pending)
    finally:
        for _, future in pending:
            if not future.done():
                future.add_done_callback(consume)
    await score(st)
    arrange(st)
    if st.offloaded:
        await offload_join(st)
    else:
        encode(st)
    # Served re-ranked: only now is the page's assembled list cached (nothing is for a
    # request that was skipped; the item vectors themselves are cached as they come).
    assert st.lookup is not None
    st.svc.embeddings.remember(st.lookup)


def items_only(st: FeedRequest) -> None:
    """The items of a body served as it came (a control arm's, for its record): decode
    and find them, nothing more; a body without items records none."""
    try:
        decode(st)
        find_items(st)
    except (RankgateError, ItemsNotFound):
        st.ids = []


def decode(st: FeedRequest) -> None:
    inflate(st)
    parse(st)


def inflate(st: FeedRequest) -> None:
    try:
        st.raw = codec.decode(st.body, st.encoding, st.svc.max_body_bytes)
    except codec.CodecError:
        raise BodyError(Reason.ENCODING) from None


def parse(st: FeedRequest) -> None:
    plan = st.route.reads
    if plan is not None:
        st.spliced = splice.find(st.raw, plan)
        if st.spliced is not None:
            return  # items found, no document built
    try:
        st.ctx.doc = orjson.loads(st.raw)
    except orjson.JSONDecodeError:
        raise BodyError(Reason.BAD_JSON) from None


async def offload_find(st: FeedRequest) -> bool:
    """A big body's ids found in a re-rank process (proxy/feed/offload.py); False: the
    body is parsed here (not big, not a route for it, or not a body its plan takes)."""
    off, plan, rules = st.svc.offload, st.route.reads, len(st.route.plugins.rules)
    if off is None or plan is None or not off.takes(st.raw, plan, rules, st.explains is not None):
        return False
    started = time.perf_counter()
    try:
        st.ticket = off.open()
        found = await off.find(st.ticket, st.deadline, st.raw, plan)
    finally:
        st.timings["offload"] = time.perf_counter() - started
    if found is not None:
        (ids, st.ids_key), st.offloaded = found, True
        st.arrays, st.ids = [ItemArray([None] * len(ids), ids)], ids
    return st.offloaded


async def offload_join(st: FeedRequest) -> None:
    assert st.svc.offload is not None and st.ticket is not None
    started = time.perf_counter()
    try:
        out = await st.svc.offload.join(st.ticket, st.deadline, st.served[0])
    finally:
        st.timings["offload"] += time.perf_counter() - started
    st.out = codec.encode(out, st.encoding)


def find_items(st: FeedRequest) -> None:
    if st.spliced is not None:  # found by parse
        arrays = [st.spliced.array]
        ids = arrays[0].ids
    elif st.offloaded:  # found in a re-rank process
        arrays, ids = st.arrays, st.ids
    else:
        try:
            arrays = st.route.plugins.find_items(st.ctx)
        except ItemsNotFound:
            raise ItemsError(Reason.ITEMS_NOT_FOUND) from None
        except PluginFailure as exc:
            raise from_plugin(exc) from None
        ids = arrays[0].ids if len(arrays) == 1 else [i for arr in arrays for i in arr.ids]
    if not ids:
        raise ItemsError(Reason.NO_ITEMS)
    if st.ids_key is None and ids.count(None) == len(ids):
        raise ItemsError(Reason.NO_ITEM_IDS)
    st.arrays, st.ids = arrays, ids


async def user_vector(st: FeedRequest) -> None:
    assert st.user_task is not None
    user = await within(st.user_task, st.deadline)
    if user is None:
        raise Skip(Reason.UNKNOWN_USER)
    st.user = user


async def item_vectors(st: FeedRequest) -> None:
    """The vectors of the items that have an id: in-process caches first, then one
    Redis round trip for the misses."""
    embeddings, ids = st.svc.embeddings, st.ids
    # Usually every item has an id: then the id list is looked up as it is.
    every = st.ids_key is not None or None not in ids
    with_ids = None if every else [p for p, i in enumerate(ids) if i is not None]
    wanted: Any = ids if with_ids is None else [ids[p] for p in with_ids]
    started = time.perf_counter()
    try:
        lookup = st.lookup = embeddings.lookup(wanted, st.ids_key)
        if lookup.result is not None:
            have, vectors = lookup.result  # all cached: no task, no loop turn
        else:
            have, vectors = await within(
                asyncio.ensure_future(embeddings.complete(lookup)), st.deadline
            )
    finally:
        timings = st.timings
        timings["redis"] = timings.get("redis", 0.0) + time.perf_counter() - started
        mark(st.record, "redis items", started)
    if have.size == 0:
        raise ItemsError(Reason.NO_ITEM_VECTORS)
    st.positions = have if with_ids is None else np.asarray(with_ids, dtype=np.intp)[have]
    st.vectors = vectors


def start_prefetch(st: FeedRequest) -> Prefetch:
    plugins = st.route.plugins
    if not plugins.prefetchers:
        return []
    st.ctx.found = st.arrays
    return plugins.start_prefetch(st.ctx)


async def finish_prefetch(st: FeedRequest, pending: Prefetch) -> None:
    timings = st.timings
    for plugin, future in pending:
        waited = time.perf_counter()
        try:
            await within(future, st.deadline, plugin.name)
        except PluginFailure as exc:
            raise from_plugin(exc) from None
        finally:
            key = plugin.timing_key
            timings[key] = timings.get(key, 0.0) + time.perf_counter() - waited
            if st.record.trace is not None:
                mark(st.record, "plugin prefetch", waited, {"rankgate.plugin": plugin.name})


async def score(st: FeedRequest) -> None:
    """One batched model run over every scored item (one per model on an interleaved arm)."""
    assert st.model is not None
    started = time.perf_counter()
    try:
        st.scores = await _run(st, st.model)
        st.scores_others = [await _run(st, model) for model in st.others]
    finally:
        st.timings["inference"] = time.perf_counter() - started
        if st.record.trace is not None:
            mark(st.record, "model", started, {"rankgate.model": st.model.name})


async def _run(st: FeedRequest, model: ModelSession) -> np.ndarray:
    try:
        if len(st.positions) >= st.svc.thread_min_items:
            # ORT releases the GIL: a big batch must not stall other requests.
            run = asyncio.to_thread(model.score, st.user, st.vectors)
            scores = await within(asyncio.ensure_future(run), st.deadline)
        else:
            scores = model.score(st.user, st.vectors)
    except Skip:
        raise
    except Exception as exc:
        detail = str(exc).splitlines()[0] if str(exc) else repr(exc)
        log.warning("model %s failed: %s", model.name, detail)
        raise ModelError(Reason.MODEL_ERROR, detail) from None
    if not np.isfinite(scores).all():
        raise ModelError(Reason.MODEL_ERROR, "non-finite scores")
    return scores


def arrange(st: FeedRequest) -> None:
    """Each array in its new order: the rules plugins, or a stable sort by score; on an
    interleaved arm, the team-draft of the models' orders (proxy/feed/interleave.py)."""
    plugins = st.route.plugins
    parts = split(st.arrays, st.positions, st.scores, st.vectors)
    started = time.perf_counter()
    try:
        if st.scores_others:
            _interleave(st, parts)
        else:
            st.served = [_arranged(st, *part)[0] for part in parts]
        if not plugins.rules and past(st.deadline):
            raise Skip(Reason.BUDGET)
        if st.spliced is not None or st.offloaded:
            return  # the items' bytes are spliced in the served order
        for (arr, *_), source in zip(parts, st.served, strict=True):
            items = arr.items
            plugins.put(arr, [items[i] for i in source.tolist()])
    except PluginFailure as exc:
        raise from_plugin(exc) from None
    finally:
        if plugins.rules and st.record.trace is not None:
            names = ",".join(p.name for p in plugins.rules)
            mark(st.record, "plugins", started, {"rankgate.plugins": names})


def _arranged(
    st: FeedRequest, arr: ItemArray, pos: np.ndarray, scores: np.ndarray, vec: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One array by one model's scores: the item per slot, and the fixed items' mask
    (unscored items, and those a rule pinned)."""
    plugins = st.route.plugins
    fixed = np.ones(len(arr.items), dtype=bool)
    fixed[pos] = False
    if not plugins.rules:
        return served_order(len(arr.items), pos, scores), fixed
    st.ctx.user_embedding = st.user
    watch = None
    if st.explains is not None:  # explaining: each rule's before and after, kept
        watch = []
        st.explains.append(watch)
    source = plugins.apply(st.ctx, arr, pos, scores, vec, st.deadline, watch)
    return source, st.ctx.fixed | fixed


def _interleave(
    st: FeedRequest, parts: list[tuple[ItemArray, np.ndarray, np.ndarray, np.ndarray]]
) -> None:
    """Each array arranged by each model's scores (B's, C's... first, so that a rule
    writing into the items, like annotate, leaves A's), then team-drafted."""
    seed = seed_of(st.request_id)
    parts_others = [split(st.arrays, st.positions, s, st.vectors) for s in st.scores_others]
    st.served, st.teams = [], []
    for k, part_a in enumerate(parts):
        sources = [_arranged(st, *others[k])[0] for others in parts_others]
        source_a, fixed = _arranged(st, *part_a)
        source, teams = multileave_slots(source_a, fixed, sources, seed + k)
        st.served.append(source)
        st.teams.append(teams)


def encode(st: FeedRequest) -> None:
    started = time.perf_counter()
    if st.spliced is not None:
        st.out = codec.encode(st.spliced.join(st.served[0].tolist()), st.encoding)
        mark(st.record, "encode", started)
        return
    out = orjson.dumps(st.ctx.doc)
    # A "+" is rare in JSON text and found by memchr; "e+" alone is a slow scan when
    # the text is full of "e"s (11 us for the bench's 12 KB feed).
    if b"+" in out and b"e+" in out and _BIG_INT.search(st.raw):
        raise BodyError(Reason.UNSAFE_NUMBER)
    st.out = codec.encode(out, st.encoding)
    mark(st.record, "encode", started)


def split(
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
