"""Built-in items plugin ``dotted``: the array at a dotted path, ids at a dotted path in
each item. A route's own ``items:``/``item_id:`` do the same without a plugin entry;
listing it is only useful to spell them among the plugins."""

from __future__ import annotations

from pydantic import field_validator

from plugins.context import FeedContext, ItemArray, ItemsNotFound
from plugins.hooks import PluginOptions
from proxy.ranking import dig, item_ids


class DottedItems:
    class Options(PluginOptions):
        items: str = "items"  # "" = the body itself is the array
        item_id: str = "id"

        @field_validator("items", "item_id")
        @classmethod
        def _dotted(cls, value: str) -> str:
            if value and any(part == "" for part in value.split(".")):
                raise ValueError(f"not a dotted path: {value!r}")
            return value

    def __init__(self, options: Options) -> None:
        self.path = tuple(options.items.split(".")) if options.items else ()
        self.id_path = tuple(options.item_id.split(".")) if options.item_id else ()

    def find_items(self, ctx: FeedContext) -> list[ItemArray]:
        items = dig(ctx.doc, self.path)
        if not isinstance(items, list):
            raise ItemsNotFound(".".join(self.path))
        return [ItemArray(items, item_ids(items, self.id_path))]
