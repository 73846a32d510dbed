"""Built-in user plugin ``sources``: the first of ``cookie:NAME``, ``header:NAME`` or
``query:NAME`` present in the request. What a route's own ``user:`` list does; as a
plugin it can follow another resolver, e.g. a JWT for signed-in users and then an
anonymous cookie: ``[{use: jwt, ...}, {use: sources, from: [cookie:anon]}]``."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from plugins.context import FeedContext
from plugins.hooks import PluginOptions
from proxy.users import resolve_user

_SOURCE = re.compile(r"^(cookie|header|query):([!#$%&'*+\-.^_`|~0-9A-Za-z]+)$")


class RequestSources:
    class Options(PluginOptions):
        from_: tuple[str, ...] = Field(alias="from", min_length=1)

        @field_validator("from_")
        @classmethod
        def _sources(cls, value: tuple[str, ...]) -> tuple[str, ...]:
            for source in value:
                if not _SOURCE.match(source):
                    raise ValueError(
                        f"{source!r}: want 'cookie:NAME', 'header:NAME' or 'query:NAME'"
                    )
            return value

    def __init__(self, options: Options) -> None:
        self.sources = tuple(
            (kind, name) for kind, _, name in (s.partition(":") for s in options.from_)
        )
        # The request headers this resolver reads (a query parameter is part of the URL).
        self.vary = tuple(
            dict.fromkeys(
                "Cookie" if kind == "cookie" else name
                for kind, name in self.sources
                if kind != "query"
            )
        )

    def resolve_user(self, ctx: FeedContext) -> str | None:
        return resolve_user(self.sources, ctx.view)
