"""Built-in rule ``filter``: drop items from the response.

    - {use: filter, field: status, in: [hidden, deleted]}   # a field condition
    - {use: filter, cookie: seen}                 # ids listed in a cookie: "i1,i7,i9"
    - {use: filter, redis_set: "seen:{user}"}     # ids in the user's Redis set

Conditions combine with "or". The Redis set is asked with one SMISMEMBER for the feed's
ids (bounded by the feed, whatever the set's size), through the embeddings' Redis client
and its timeout, concurrently with the item-embedding lookup. If Redis fails, the
request fails open like any Redis failure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import unquote

import numpy as np
from pydantic import Field, field_validator, model_validator

from plugins.context import FeedContext
from plugins.fields import FieldMatch, Scalar, check_dotted
from plugins.hooks import PluginOptions

MAX_COOKIE_IDS = 1000  # a cookie is at most a few KB; more is not a list of ids


class Filter:
    class Options(PluginOptions):
        field: str | None = None
        equals: Scalar = None
        in_: tuple[Scalar, ...] | None = Field(default=None, alias="in")
        cookie: str | None = None
        separator: str = Field(default=",", min_length=1)
        redis_set: str | None = None

        @field_validator("field")
        @classmethod
        def _field(cls, value: str | None) -> str | None:
            return value if value is None else check_dotted(value)

        @field_validator("redis_set")
        @classmethod
        def _key(cls, value: str | None) -> str | None:
            if value is not None and "{user}" not in value:
                raise ValueError("must contain {user}, e.g. 'seen:{user}'")
            return value

        @model_validator(mode="after")
        def _something(self) -> Filter.Options:
            if self.field is None and self.cookie is None and self.redis_set is None:
                raise ValueError("needs at least one of field, cookie, redis_set")
            condition = "equals" in self.model_fields_set or self.in_ is not None
            if condition and self.field is None:
                raise ValueError("'equals' and 'in' go with 'field'")
            return self

    def __init__(self, options: Options) -> None:
        self.matches: Callable[[Sequence[Any]], np.ndarray] | None = None
        if options.field is not None:
            spec: dict[str, Any] = {"field": options.field}
            if "equals" in options.model_fields_set:
                spec["equals"] = options.equals
            if options.in_ is not None:
                spec["in"] = options.in_
            self.matches = FieldMatch.model_validate(spec).compile()
        self.cookie = options.cookie
        self.separator = options.separator
        self.redis_set = options.redis_set
        self.vary = ("Cookie",) if options.cookie else ()
        self.item_fields = () if options.field is None else (options.field.split(".")[0],)

    async def prefetch(self, ctx: FeedContext) -> None:
        if self.redis_set is None or ctx.user_id is None:
            return
        ids = list(dict.fromkeys(i for arr in ctx.found for i in arr.ids if i is not None))
        if not ids:
            return
        key = self.redis_set.replace("{user}", ctx.user_id)
        if ctx.command is not None:
            flags = await ctx.command("SMISMEMBER", key, *ids)
        elif ctx.redis is not None:
            flags = await ctx.redis.smismember(key, ids)  # type: ignore[misc]
        else:
            raise RuntimeError("filter: redis_set needs the proxy's Redis")
        ctx.state[self] = {ident for ident, flag in zip(ids, flags, strict=True) if flag}

    def _cookie_ids(self, ctx: FeedContext) -> set[str]:
        assert self.cookie is not None
        raw = ctx.view.cookies.get(self.cookie)
        if not raw:
            return set()
        parts = unquote(raw).split(self.separator, MAX_COOKIE_IDS)[:MAX_COOKIE_IDS]
        return {p.strip() for p in parts if p.strip()}

    def rerank(self, ctx: FeedContext) -> None:
        if self.matches is not None:
            ctx.dropped |= self.matches(ctx.items)
        seen: set[str] = set()
        if self.cookie is not None:
            seen |= self._cookie_ids(ctx)
        if self.redis_set is not None:
            seen |= ctx.state.get(self, set())
        if seen:
            ctx.dropped |= np.array([i in seen for i in ctx.ids], dtype=bool)
