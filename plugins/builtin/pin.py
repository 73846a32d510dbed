"""Built-in rule ``pin``: items whose field matches keep their origin slot.

    - {use: pin, field: sponsored}                 # sponsored: true (JSON-truthy)
    - {use: pin, field: kind, in: [ad, promo]}

A pinned item stays at its index in the response; the other items are ranked around it.
(When a filter drops items, a pinned item keeps its index as long as the shorter array
has it, and otherwise moves to the end.)
"""

from __future__ import annotations

from plugins.context import FeedContext
from plugins.fields import FieldMatch


class Pin:
    class Options(FieldMatch):
        pass

    def __init__(self, options: Options) -> None:
        self.matches = options.compile()
        self.item_fields = (options.field.split(".")[0],)

    def rerank(self, ctx: FeedContext) -> None:
        ctx.fixed |= self.matches(ctx.items)
