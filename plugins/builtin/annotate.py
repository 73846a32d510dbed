"""Built-in rule ``annotate``: write each scored item's final score into the item.

    - {use: annotate}                        # "_score": 12.3457 in every scored item
    - {use: annotate, field: rank_score, round: 2}

It is the one built-in that changes the body beyond the order: opt-in, for demos,
debugging and clients that want to show why an item came first. Each scored item that
is a JSON object gets ``field`` set to its score as a JSON number, rounded to ``round``
decimals (replacing a value the origin may have sent under that key); unscored items
(no id or no embedding) and items that are not objects are left as they are. Pinned
items carry their score too, though it did not place them; dropped items are gone.

The score written is the one that ranked the item: the model's, after every score rule
(boost). So the route must list annotate after every other rules plugin; a route that
does not is refused at load. An order rule such as diversify places items by more than
the score, so under it the written scores need not descend along the feed.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from plugins.context import FeedContext
from plugins.hooks import PluginOptions


class Annotate:
    # Read by the registry: any other rules plugin after this one is refused.
    _last_rule = True

    class Options(PluginOptions):
        field: str = "_score"  # a top-level key of the item
        round: Annotated[int, Field(ge=0, le=12)] = 4  # decimals

        @field_validator("field")
        @classmethod
        def _field(cls, value: str) -> str:
            if not value or "." in value or value != value.strip():
                raise ValueError(f"want a plain key name (no dots, no spaces around): {value!r}")
            return value

    def __init__(self, options: Options) -> None:
        self.field = options.field
        self.digits = options.round

    def rerank(self, ctx: FeedContext) -> None:
        # One numpy pass to round (in float64: the float32 score's exact value, so the
        # rounded number prints short), then one dict set per scored item.
        # "+ 0.0" turns a rounded -0.0 into 0.0.
        scores = (ctx.scores.astype(float).round(self.digits) + 0.0).tolist()
        items, key = ctx.items, self.field
        for position, score in zip(ctx.positions.tolist(), scores, strict=True):
            item = items[position]
            if type(item) is dict:
                item[key] = score
