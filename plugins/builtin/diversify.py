"""Built-in rule ``diversify``: maximal marginal relevance (MMR) over the item embeddings.

    - {use: diversify, lambda: 0.7}            # 1 = by score only, 0 = spread only
    - {use: diversify, lambda: 0.5, depth: 20}

Greedily, each next slot goes to the item with the best
``lambda * relevance - (1 - lambda) * max cosine similarity to the items above it``,
where relevance is the score scaled to 0..1 over the ranked items. MMR fills the top
``depth`` slots (the part a user sees first, and the part whose cost grows with it:
one numpy pass over the items per slot); the items below follow by score. Fixed
(pinned) and dropped items take no part. Put it after score rules such as boost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
from pydantic import Field, field_validator

from plugins.context import FeedContext
from plugins.hooks import PluginOptions

FULL_MATRIX_MAX = 256  # ranked items up to which the whole similarity matrix is built


class Diversify:
    class Options(PluginOptions):
        lambda_: float = Field(alias="lambda")
        depth: Annotated[int, Field(ge=1, le=10_000)] = 50

        @field_validator("lambda_", mode="before")
        @classmethod
        def _unit(cls, value: Any) -> Any:
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (0 <= value <= 1)
            ):
                raise ValueError("must be 0..1")
            return value

    def __init__(self, options: Options) -> None:
        self.lam = float(options.lambda_)
        self.depth = options.depth
        self.item_fields = ()  # embeddings and scores only

    def rerank(self, ctx: FeedContext) -> None:
        movable = ctx.movable()
        cand = np.flatnonzero(movable)
        c = cand.size
        if c < 2 or self.lam >= 1.0:
            return  # nothing to spread, or relevance only: the score order stands
        if c == ctx.scores.size:  # nothing pinned or dropped: no gathers
            rel, emb = ctx.scores.astype(np.float64), ctx.embeddings
        else:
            rel, emb = ctx.scores[cand].astype(np.float64), ctx.embeddings[cand]
        lo, hi = rel.min(), rel.max()
        rel = (rel - lo) / (hi - lo) if hi > lo else np.zeros(c)
        norms = np.sqrt(np.einsum("ij,ij->i", emb, emb))
        emb = emb / np.maximum(norms, 1e-12)[:, None]  # cosine; a zero vector stays zero

        k = min(self.depth, c)
        gain = self.lam * rel
        weight = 1.0 - self.lam
        if c <= FULL_MATRIX_MAX:
            # All pairwise similarities, pre-weighted, in one matmul: the greedy loop
            # below is then three numpy calls per slot.
            penalty = weight * (emb @ emb.T)
            row: Callable[[int], np.ndarray] = penalty.__getitem__
        else:  # a big feed: one row per slot, never a c x c matrix
            row = lambda i: weight * (emb @ emb[i])  # noqa: E731
        picks = np.empty(k, dtype=np.intp)
        best = int(rel.argmax())  # the first slot: the most relevant (earliest on ties)
        worst = np.full(c, -np.inf)  # per item: (1 - lambda) * max similarity to picks
        mmr = np.empty(c)
        for t in range(k):
            picks[t] = best
            if t + 1 == k:
                break
            np.maximum(worst, row(best), out=worst)
            worst[best] = np.inf  # taken: never picked again (lambda < 1 here)
            np.subtract(gain, worst, out=mmr)
            best = int(mmr.argmax())
        rest = np.ones(c, dtype=bool)
        rest[picks] = False
        tail = np.flatnonzero(rest)
        tail = tail[np.argsort(-rel[tail], kind="stable")]
        ctx.order = np.concatenate((cand[picks], cand[tail], np.flatnonzero(~movable)))
