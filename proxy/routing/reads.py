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

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, TypedDict

import msgspec
from msgspec import Raw

from plugins.run import RoutePlugins

# What a route keeps of the bodies it has read (BodyMemo): a page is usually sent as the same
# bytes to many users. Bounded by count and by the bodies' bytes (the items read from them
# take about as much again at the bench's shape).
MEMO_BODIES = 32
MEMO_BYTES = 1 << 20  # of bodies, per route; a body over an eighth of it is not kept


class BodyMemo:
    """The last bodies read by one plan, by their bytes: a body the origin sends again
    (the same page for another user) is not scanned again. Its bytes are the key, so a
    hit is the same bytes (one hash of the body, then a compare)."""

    def __init__(self) -> None:
        self._found: OrderedDict[bytes, Any] = OrderedDict()
        self.nbytes = 0

    def get(self, raw: bytes) -> Any | None:
        found = self._found.get(raw)
        if found is not None:
            self._found.move_to_end(raw)
        return found

    def put(self, raw: bytes, found: Any) -> None:
        if len(raw) > MEMO_BYTES // 8 or raw in self._found:
            return
        self._found[raw] = found
        self.nbytes += len(raw)
        while len(self._found) > MEMO_BODIES or self.nbytes > MEMO_BYTES:
            old, _ = self._found.popitem(last=False)
            self.nbytes -= len(old)

    def __len__(self) -> int:
        return len(self._found)


@dataclass(frozen=True, eq=False)
class BodyPlan:
    """The decoders a qualifying route's bodies go through."""

    envelope: msgspec.json.Decoder[Any]  # body -> nested dicts down to the items' bytes
    path: tuple[str, ...]  # the array's dotted path ("" = the body)
    items: msgspec.json.Decoder[list[dict[str, Any]]]  # the array -> the keys read
    id_path: tuple[str, ...]
    fields: tuple[str, ...]  # the item keys the rules read (besides the id)
    # Only on a route without rules plugins: what is read from a body is then shared by
    # every request that gets the same bytes, and nothing writes into it.
    memo: BodyMemo | None = field(default=None, repr=False)


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
    memo = BodyMemo() if not plugins.rules else None
    return build(dotted.path, dotted.id_path, tuple(sorted(fields)), memo)


def build(
    path: tuple[str, ...],
    id_path: tuple[str, ...],
    fields: tuple[str, ...],
    memo: BodyMemo | None = None,
) -> BodyPlan:
    """The decoders for an array at ``path``, ids at ``id_path``, and ``fields`` read
    (``memo``: the bodies read are kept for the next request with the same bytes)."""
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
        memo=memo,
    )
