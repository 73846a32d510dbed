"""Example plugins: the ones plugins/README.md shows, kept here so tests run them.

Use them from routes.yaml as ``plugins.examples:FavoriteCategories`` and
``plugins.examples:GraphQLEdges``.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from plugins import FeedContext, ItemArray, ItemsNotFound, PluginOptions


# --8<-- [start:favorite-categories]
class FavoriteCategories:
    """Lift the items of the categories a user picked as favourites.

    routes.yaml: {use: "plugins.examples:FavoriteCategories", cookie: fav, lift: 0.5}
    A request with ``Cookie: fav=jazz,blues`` sees jazz and blues items higher.
    """

    class Options(PluginOptions):
        cookie: str = "fav"  # comma-separated category names
        field: str = "category"  # the item's category (a top-level key)
        lift: Annotated[float, Field(gt=0, le=1)] = 0.5  # share of the score range added

    def __init__(self, options: Options) -> None:
        # Runs once per routes load; the object then serves every request.
        self.cookie = options.cookie
        self.field = options.field
        self.lift = options.lift
        self.vary = ("Cookie",)  # the response depends on a cookie

    def rerank(self, ctx: FeedContext) -> None:
        # After scoring, once per item array. Sync: numpy, no I/O.
        favorites = {c for c in ctx.view.cookies.get(self.cookie, "").split(",") if c}
        if not favorites or ctx.scores.size == 0:
            return
        categories = [ctx.items[p].get(self.field) for p in ctx.positions.tolist()]
        hit = np.array([isinstance(c, str) and c in favorites for c in categories])
        span = float(ctx.scores.max() - ctx.scores.min()) or 1.0
        ctx.scores = ctx.scores + hit * (self.lift * span)


# --8<-- [end:favorite-categories]


# --8<-- [start:graphql-edges]
class GraphQLEdges:
    """Items of a GraphQL connection: ``{edges: [{node: {id, ...}, cursor}, ...]}``.

    routes.yaml: {use: "plugins.examples:GraphQLEdges", connection: data.viewer.feed}
    The edges move as wholes, so each cursor stays with its node.
    """

    class Options(PluginOptions):
        connection: str  # dotted path to the connection object
        id_field: str = "id"  # inside each node

    def __init__(self, options: Options) -> None:
        self.path = options.connection.split(".")
        self.id_field = options.id_field

    def find_items(self, ctx: FeedContext) -> list[ItemArray]:
        node = ctx.doc
        for part in self.path:
            if not isinstance(node, dict) or part not in node:
                raise ItemsNotFound(".".join(self.path))  # -> reason=items-not-found
            node = node[part]
        edges = node.get("edges") if isinstance(node, dict) else None
        if not isinstance(edges, list):
            raise ItemsNotFound(".".join(self.path) + ".edges")
        ids: list[str | None] = []
        for edge in edges:
            inner = edge.get("node") if isinstance(edge, dict) else None
            ident = inner.get(self.id_field) if isinstance(inner, dict) else None
            ids.append(ident if isinstance(ident, str) else None)
        return [ItemArray(edges, ids)]


# --8<-- [end:graphql-edges]
