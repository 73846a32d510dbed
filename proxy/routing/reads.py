"""What a route reads of a feed body, compiled once per route: the item array's bounds, each
item's id and the item fields its rules declare, and nothing else.

A route qualifies when its items come from its own ``items:``/``item_id:`` (object keys, no
array indices) and every rules plugin declares the top-level item keys it reads
(``item_fields``; the built-ins boost, pin, filter and diversify do). Such a body is scanned
by msgspec: the envelope and every item stay bytes (``msgspec.Raw``, views of the body),
items are read as dicts holding only the declared keys, and the response is the body with
the array's items spliced back in the new order. Any other route, or a rule that writes into
items (annotate) or needs whole items, takes the full parse (``proxy.feed.rerank``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

import msgspec
from msgspec import Raw

from plugins.run import RoutePlugins


@dataclass(frozen=True, eq=False)
class BodyPlan:
    """The decoders a qualifying route's bodies go through."""

    envelope: msgspec.json.Decoder[Any]  # body -> nested dicts down to the items' bytes
    path: tuple[str, ...]  # the array's dotted path ("" = the body)
    items: msgspec.json.Decoder[list[dict[str, Any]]]  # the array -> the keys read
    id_path: tuple[str, ...]
    fields: tuple[str, ...]  # the item keys the rules read (besides the id)


def _nested(path: tuple[str, ...], leaf: Any, name: str) -> Any:
    """``{path[0]: {path[1]: ... leaf}}`` as nested TypedDicts: unknown keys are skipped
    without building objects, a missing key is simply absent."""
    tp = leaf
    for depth, key in reversed(list(enumerate(path))):
        tp = TypedDict(f"{name}{depth}", {key: tp}, total=False)  # type: ignore[operator]
    return tp


def plan(plugins: RoutePlugins) -> BodyPlan | None:
    """The route's plan, or None when it needs the whole document."""
    dotted = plugins.dotted
    if dotted is None or not dotted.id_path:
        return None
    if any(part.isdigit() for part in (*dotted.path, *dotted.id_path)):
        return None  # array indices: the full parse handles them
    fields: set[str] = set()
    for rule in plugins.rules:
        if rule.item_fields is None:
            return None
        fields.update(rule.item_fields)
    return build(dotted.path, dotted.id_path, tuple(sorted(fields)))


def build(path: tuple[str, ...], id_path: tuple[str, ...], fields: tuple[str, ...]) -> BodyPlan:
    """The decoders for an array at ``path``, ids at ``id_path``, and ``fields`` read."""
    head, rest = id_path[0], id_path[1:]
    keys: dict[str, Any] = dict.fromkeys(fields, Any)
    if head not in keys:
        keys[head] = _nested(rest, Any, "Id") if rest else Any
    item = TypedDict("Item", keys, total=False)  # type: ignore[operator]
    return BodyPlan(
        envelope=msgspec.json.Decoder(_nested(path, list[Raw], "Envelope")),
        path=path,
        items=msgspec.json.Decoder(list[item]),  # type: ignore[valid-type]
        id_path=id_path,
        fields=fields,
    )
