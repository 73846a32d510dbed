"""Built-in user plugin ``sources``: the first of ``cookie:NAME``, ``header:NAME`` or
``query:NAME`` present in the request.

A route's own ``user:`` list compiles into this plugin. Listed among a route's plugins it
can follow another resolver, e.g. a JWT for signed-in users and then an anonymous
cookie: ``[{use: jwt, ...}, {use: sources, from: [cookie:anon]}]``.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from plugins.context import MAX_USER_ID, FeedContext, RequestView
from plugins.hooks import PluginOptions

SOURCE = re.compile(r"^(cookie|header|query):([!#$%&'*+\-.^_`|~0-9A-Za-z]+)$")
Source = tuple[str, str]  # (cookie | header | query, name)


def check_source(source: str) -> str:
    if not SOURCE.match(source):
        raise ValueError(f"{source!r}: want 'cookie:NAME', 'header:NAME' or 'query:NAME'")
    return source


def resolve_user(sources: tuple[Source, ...], view: RequestView) -> str | None:
    """The first non-empty value of the sources, stripped; None if none is usable."""
    for kind, name in sources:
        if kind == "cookie":
            value = view.cookies.get(name)
        elif kind == "header":
            value = view.headers.get(name)
        else:
            value = view.query.get(name)
        if value:
            value = value.strip()
            if value and len(value) <= MAX_USER_ID:
                return value
    return None


class RequestSources:
    class Options(PluginOptions):
        from_: tuple[str, ...] = Field(alias="from", min_length=1)

        @field_validator("from_")
        @classmethod
        def _sources(cls, value: tuple[str, ...]) -> tuple[str, ...]:
            for source in value:
                check_source(source)
            return value

    def __init__(self, options: Options) -> None:
        self.sources: tuple[Source, ...] = tuple(
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
