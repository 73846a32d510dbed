"""Built-in rule ``boost``: ``score += weight * field`` for a numeric field of each item.

    - {use: boost, field: freshness, weight: 0.5}
    - {use: boost, field: stats.ctr, weight: 2.0, missing: 0}

Items whose field is absent or not a number count as ``missing`` (default 0). Scores
are the model's own scale: pick the weight against it. List boosts before an order
rule such as diversify, which ranks by the scores as they are then.
"""

from __future__ import annotations

import math

from pydantic import field_validator

from plugins.context import FeedContext
from plugins.fields import check_dotted, dotted, numbers, values
from plugins.hooks import PluginOptions


class Boost:
    class Options(PluginOptions):
        field: str
        weight: float
        missing: float = 0.0

        @field_validator("field")
        @classmethod
        def _field(cls, value: str) -> str:
            return check_dotted(value)

        @field_validator("weight", "missing")
        @classmethod
        def _finite(cls, value: float) -> float:
            if not math.isfinite(value):
                raise ValueError("must be a finite number")
            return value

    def __init__(self, options: Options) -> None:
        self.path = dotted(options.field)
        self.weight = options.weight
        self.missing = options.missing
        self.item_fields = (self.path[0],)

    def rerank(self, ctx: FeedContext) -> None:
        # Read every item once (a comprehension), then keep the scored ones with numpy.
        field = numbers(values(ctx.items, self.path), self.missing)[ctx.positions]
        # Huge field values would make scores inf; the pipeline refuses non-finite
        # scores, which is right: fail open rather than rank on garbage.
        ctx.scores = ctx.scores + self.weight * field
