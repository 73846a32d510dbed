"""Driving plugins without a server: for their unit tests (yours and ours).

    from plugins.testing import apply, context, load

    pin = load("pin", field="sponsored")            # same checks as routes.yaml
    ctx = context(items, scores=[0.1, 0.9, 0.5])     # ids from item["id"], all scored
    assert [it["id"] for it in apply(ctx, pin)] == [...]

``apply`` runs the rerank hooks in order with the pipeline's own checks and returns the
array as the response would carry it. End-to-end behaviour (Redis, budgets, headers)
is for tests over real sockets; see tests/e2e/test_plugins_e2e.py.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from plugins.context import FeedContext, ItemArray, RequestView
from plugins.registry import load as _load
from plugins.run import LoadedPlugin, RoutePlugins
from plugins.spec import PluginSpec


def load(
    use: str, base_dir: Path | None = None, paths: Sequence[Path] | None = None, **options: Any
) -> LoadedPlugin:
    """The plugin as a route would load it (``PluginLoadError`` on bad options/hooks).
    ``paths``: what rankgate.yaml's ``plugins.paths`` would name; by default every
    directory on ``sys.path`` (your test names your own module, so any module on the
    path counts as installed here, unlike in a routes file)."""
    if paths is None:
        paths = [Path(p or ".") for p in sys.path]
    return _load(PluginSpec(use=use, **options), "plugin", base_dir, paths=paths)


def context(
    items: list[Any],
    *,
    ids: Sequence[str | None] | None = None,
    scores: Sequence[float] | np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    user_id: str | None = "u1",
    headers: Mapping[str, str] | None = None,
    cookies: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None,
) -> FeedContext:
    """A context as rerank sees it. Items with an id are scored (ids default to each
    item's ``id``); ``scores`` and ``embeddings`` have one row per scored item."""
    if ids is None:
        ids = [it.get("id") if isinstance(it, dict) else None for it in items]
    id_list = [None if i is None else str(i) for i in ids]
    positions = np.array([k for k, i in enumerate(id_list) if i is not None], dtype=np.intp)
    m = positions.size
    score_arr = (
        np.asarray(scores, dtype=np.float32)
        if scores is not None
        else np.linspace(1.0, 0.0, m, dtype=np.float32)  # origin order by default
    )
    vectors = embeddings if embeddings is not None else np.zeros((m, 1), dtype=np.float32)
    fixed = np.ones(len(items), dtype=bool)
    fixed[positions] = False
    view = RequestView(headers or {}, cookies or {}, query or {})
    ctx = FeedContext(None, view, "test", {}, None, user_id=user_id)
    ctx.items, ctx.ids, ctx.positions = items, id_list, positions
    ctx.embeddings, ctx.scores = vectors, score_arr
    ctx.fixed, ctx.dropped = fixed, np.zeros(len(items), dtype=bool)
    return ctx


def apply(ctx: FeedContext, *plugins: LoadedPlugin) -> list[Any]:
    """Run the plugins' rerank hooks on ``ctx`` (as the pipeline does, with its checks)
    and return the array as the response would carry it."""
    arr = ItemArray(ctx.items, ctx.ids)
    source = RoutePlugins(rules=plugins).apply(
        ctx, arr, ctx.positions, ctx.scores, ctx.embeddings, None
    )
    return [arr.items[i] for i in source.tolist()]
