"""``rankgate check``'s online probe of each feed route: would it ever re-rank?

Per route, one GET of a sample path from the origin (the route's ``sample:``, else its
match path when that is exact), then, as the feed path would see it:

  the answer    status and content type (200 and JSON, or it never re-ranks)
  items         found at the route's ``items`` path (or by its items plugin): count
  ids           items with an id at ``item_id``: count
  vectors       item vectors in Redis for those ids: count and share
  dry run       one user vector from Redis and the route's model: the scores

A step that means the route would never re-rank is a FAIL naming the ``X-Rerank``
reason requests would get, and what to do; the probe of that route stops there.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from plugins.builtin.dotted import item_ids
from proxy.config.routes import NONE_MODEL
from proxy.feed.sample import SampleError, fetch, join
from proxy.preflight.feedshape import choose_id, find_arrays, find_ids, items_at

if TYPE_CHECKING:
    import redis

    from proxy.config.settings import Settings
    from proxy.preflight.report import Report
    from proxy.routing.snapshot import CompiledRoute, Snapshot

F32 = np.dtype("<f4")
MIN_SHARE = 0.5  # under this share of item vectors, say so (the others keep their slots)
SCAN_COUNT, SCAN_CALLS = 1000, 100  # at most ~100k keys looked at for one user vector


class Stop(Exception):
    """This route's probe ends here (a FAIL or a warning was reported)."""


def probe_routes(
    settings: Settings, snapshot: Snapshot, client: redis.Redis | None, report: Report
) -> None:
    user = find_user(settings, client) if client is not None else None
    for route in snapshot.routes:
        with contextlib.suppress(Stop):  # the route's probe reported why it stopped
            RouteProbe(settings, snapshot, route, client, user, report).run()


def find_user(settings: Settings, client: redis.Redis) -> tuple[str, np.ndarray] | None:
    """(user id, vector) of one valid user vector in Redis, for the dry run. Bounded: a
    big keyspace with few user keys is not walked to its end."""
    import redis as redis_mod

    emb = settings.embeddings
    prefix, _, suffix = emb.user_key.partition("{id}")
    pattern = emb.user_key.replace("*", r"\*").replace("{id}", "*")
    cursor = 0
    try:
        for _ in range(SCAN_CALLS):
            cursor, keys = client.scan(cursor, match=pattern, count=SCAN_COUNT)
            for key in keys:
                raw = client.get(key)
                if isinstance(raw, bytes) and len(raw) == emb.dim * 4:
                    vector = np.frombuffer(raw, dtype=F32)
                    if np.isfinite(vector).all():
                        name = key.decode(errors="replace")
                        return name[len(prefix) : len(name) - len(suffix)], vector
            if cursor == 0:
                break
    except redis_mod.RedisError:
        return None
    return None


class RouteProbe:
    def __init__(
        self,
        settings: Settings,
        snapshot: Snapshot,
        route: CompiledRoute,
        client: redis.Redis | None,
        user: tuple[str, np.ndarray] | None,
        report: Report,
    ) -> None:
        self.settings = settings
        self.snapshot = snapshot
        self.route = route
        self.client = client
        self.user = user
        self.report = report

    def ok(self, detail: str) -> None:
        self.report.line("ok", "feed", f"{self.route.name}: {detail}")

    def warn(self, detail: str) -> Stop:
        self.report.line("warn", "feed", f"{self.route.name}: {detail}")
        return Stop()

    def fail(self, detail: str) -> Stop:
        self.report.line("FAIL", "feed", f"{self.route.name}: {detail}")
        return Stop()

    def run(self) -> None:
        model = self.model_name()
        doc = self.get()
        ids = self.ids(doc)
        positions, vectors = self.vectors(ids)
        self.dry_run(model, positions, vectors)

    def model_name(self) -> str:
        spec = self.route.spec
        arms = [spec.model, *(m for e in spec.experiments for m in e.models)]
        named = [m for m in arms if m != NONE_MODEL]
        if not named:
            raise self.warn(
                "every arm is model: none (a control): it never re-ranks (reason=control)"
            )
        return named[0]

    def get(self) -> Any:
        sample = self.route.spec.sample_path
        if sample is None:
            raise self.warn(
                "not probed: its match is not one exact path; add `sample: /a/path` "
                "(a path the origin answers with this feed)"
            )
        origin = self.settings.origin
        timeout = min(origin.connect_timeout_s + origin.timeout_s, 6.0)
        url = join(origin.url, sample)
        try:
            got = fetch(url, timeout_s=timeout, max_bytes=self.settings.feed.max_body_bytes)
        except SampleError as exc:
            raise self.fail(f"{exc}: it would never re-rank") from None
        self.ok(f"GET {sample} -> {got.describe()}")
        return got.doc

    def ids(self, doc: Any) -> list[str | None]:
        spec, route = self.route.spec, self.route
        if route.plugins.dotted is None:  # an items plugin of its own, not items:
            return self.plugin_ids(doc)
        items = items_at(doc, spec.items)
        shown = spec.items or '""'
        if items is None:
            arrays = find_arrays(doc)
            there = ", ".join(f"{a.shown} ({a.objects})" for a in arrays[:5]) or "none"
            raise self.fail(
                f"no array at items: {shown} in the sample (reason=items-not-found); "
                f"arrays of objects in it: {there}"
            )
        if not items:
            raise self.warn(f"the array at {shown} is empty in the sample (reason=no-items)")
        ids = self.route_ids(items)
        have = sum(1 for i in ids if i is not None)
        if have == 0:
            chosen, shown_ids = choose_id(find_ids(items))
            better = ", ".join(c.path for c in ([chosen] if chosen else shown_ids)[:5])
            hint = f"; fields that could be: {better}" if better else ""
            raise self.fail(
                f"{len(items)} items at {shown}, but none has an id at item_id: "
                f"{spec.item_id} (reason=no-item-ids){hint}"
            )
        self.ok(f"{len(items)} items at {shown}, {have} with an id at {spec.item_id}")
        return ids

    def route_ids(self, items: list[Any]) -> list[str | None]:
        dotted = self.route.plugins.dotted
        assert dotted is not None
        return item_ids(items, dotted.id_path)

    def plugin_ids(self, doc: Any) -> list[str | None]:
        from plugins.context import FeedContext, ItemsNotFound, RequestView
        from plugins.run import PluginFailure

        plugin = self.route.plugins.items
        assert plugin is not None
        ctx = FeedContext(None, RequestView({}, {}, {}), self.route.name, {}, doc=doc)
        try:
            arrays = self.route.plugins.find_items(ctx)
        except ItemsNotFound as exc:
            raise self.fail(
                f"items plugin {plugin.name}: no items in the sample ({exc}) "
                "(reason=items-not-found)"
            ) from None
        except PluginFailure as exc:
            raise self.fail(f"items plugin {plugin.name} failed on the sample: {exc}") from None
        ids = [i for arr in arrays for i in arr.ids]
        have = sum(1 for i in ids if i is not None)
        if not ids:
            raise self.warn(f"items plugin {plugin.name}: no items in the sample (reason=no-items)")
        if have == 0:
            raise self.fail(
                f"items plugin {plugin.name}: {len(ids)} items, none with an id "
                "(reason=no-item-ids)"
            )
        self.ok(f"items plugin {plugin.name}: {len(ids)} items, {have} with an id")
        return ids

    def vectors(self, ids: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
        import redis as redis_mod

        emb = self.settings.embeddings
        if self.client is None:
            raise self.warn("item vectors and the dry run not checked (Redis failed above)")
        unique = list(dict.fromkeys(i for i in ids if i is not None))
        try:
            raws = self.client.mget([emb.item_key.replace("{id}", i) for i in unique])
        except redis_mod.RedisError as exc:
            raise self.fail(f"item vectors: Redis: {exc}") from None
        found: dict[str, np.ndarray] = {}
        for ident, raw in zip(unique, raws, strict=True):
            if isinstance(raw, bytes) and len(raw) == emb.dim * 4:
                vector = np.frombuffer(raw, dtype=F32)
                if np.isfinite(vector).all():
                    found[ident] = vector
        share = len(found) / len(unique)
        counted = f"{len(found)} of {len(unique)} item vectors in Redis ({share:.0%})"
        if not found:
            raise self.fail(
                f"0 of {len(unique)} item vectors in Redis under {emb.item_key} "
                "(reason=no-item-vectors): load them with `rankgate embeddings load`"
            )
        if share < MIN_SHARE:
            self.report.line(
                "warn",
                "feed",
                f"{self.route.name}: only {counted}: items without one keep their slots",
            )
        else:
            self.ok(counted)
        positions = [k for k, i in enumerate(ids) if i is not None and i in found]
        matrix = np.stack([found[ids[k]] for k in positions])  # type: ignore[index]
        return np.asarray(positions, dtype=np.intp), matrix

    def dry_run(self, model_name: str, positions: np.ndarray, vectors: np.ndarray) -> None:
        emb = self.settings.embeddings
        if self.user is None:
            raise self.fail(
                f"no user vector in Redis under {emb.user_key}: every request would be "
                "reason=unknown-user (load them with `rankgate embeddings load`), or "
                "bad-vector for the ones of the wrong length (the vectors lines count them)"
            )
        user_id, user = self.user
        model = self.snapshot.models.get(model_name)
        if model is None:  # the routes step already failed for it
            raise self.fail(f"model {model_name} is not loaded")
        started = time.perf_counter()
        try:
            scores = model.score(user, vectors)
        except Exception as exc:
            raise self.fail(f"dry run of {model_name}: {exc} (reason=model-error)") from None
        elapsed = time.perf_counter() - started
        if not np.isfinite(scores).all():
            raise self.fail(f"dry run of {model_name}: non-finite scores (reason=model-error)")
        order = np.argsort(-scores, kind="stable")
        moved = int((order != np.arange(order.size)).sum())
        self.ok(
            f"dry run of {model_name} for user {user_id}: {scores.size} scores in "
            f"{elapsed * 1000:.1f} ms, {moved} of {scores.size} items move"
        )
