"""What a feed looks like: the arrays of objects in a JSON body, and the id fields of
their items. ``rankgate init`` picks a route's ``items`` and ``item_id`` from these, and
``rankgate check`` names them when a route's paths find nothing.

Paths are the routes' dotted paths: ``data.posts`` (``""`` when the body is the array),
and ``pid`` or ``node.id`` inside one item.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from plugins.builtin.dotted import dig, item_ids
from plugins.context import ItemsNotFound

MAX_DEPTH = 8  # how deep in the body arrays are looked for
ID_DEPTH = 2  # id fields: top level of an item (pid), or one object down (node.id)
ID_NAMES = ("key", "slug")  # id-like besides names ending in "id" (id, pid, post_id, uuid)
# "Many" items, for choosing the feed among arrays: a list of 1-2 objects beside it is
# usually navigation, sections or ads, not the feed a person would re-rank.
MANY_ITEMS = 3


@dataclass(frozen=True)
class ArrayCandidate:
    path: str  # dotted; "" = the body itself
    length: int
    objects: int  # how many of its elements are objects

    @property
    def shown(self) -> str:
        return self.path or '""'


@dataclass(frozen=True)
class IdCandidate:
    path: str
    present: int  # items with a string or integer there
    distinct: int
    of: int  # items that are objects

    @property
    def id_like(self) -> bool:
        last = self.path.rsplit(".", 1)[-1].lower()
        return last.endswith("id") or last in ID_NAMES

    @property
    def unique(self) -> bool:
        return self.present > 0 and self.distinct == self.present

    def describe(self) -> str:
        return f"{self.present} of {self.of} items, {self.distinct} distinct"


def _is_items(value: list[Any]) -> tuple[bool, int]:
    objects = sum(1 for v in value if isinstance(v, dict))
    # Mostly objects: a list of strings or numbers is not a feed rankgate re-orders.
    return objects > 0 and objects * 2 >= len(value), objects


def find_arrays(doc: Any) -> list[ArrayCandidate]:
    """Every array of objects reachable through object keys (not inside other arrays:
    an item's own lists are not the feed), the biggest first."""
    found: list[ArrayCandidate] = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if len(path) > MAX_DEPTH:
            return
        if isinstance(node, list):
            ok, objects = _is_items(node)
            if ok:
                found.append(ArrayCandidate(".".join(path), len(node), objects))
        elif isinstance(node, dict):
            for key, value in node.items():
                # A key with a dot cannot be written as a dotted path: skip it.
                if isinstance(key, str) and key and "." not in key:
                    walk(value, (*path, key))

    walk(doc, ())
    return sorted(found, key=lambda c: (-c.objects, c.path))


def _scalar_paths(item: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[str]:
    for key, value in item.items():
        if not isinstance(key, str) or not key or "." in key:
            continue
        path = (*prefix, key)
        if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
            yield ".".join(path)
        elif isinstance(value, dict) and len(path) < ID_DEPTH:
            yield from _scalar_paths(value, path)


def find_ids(items: list[Any]) -> list[IdCandidate]:
    """Every field holding a string or integer in the items (as ``item_ids`` reads ids),
    with how many items have it and how many distinct values: id-like and unique first."""
    objects = [item for item in items if isinstance(item, dict)]
    paths: dict[str, None] = {}
    for item in objects:
        paths.update(dict.fromkeys(_scalar_paths(item)))
    found = []
    for path in paths:
        ids = [i for i in item_ids(objects, tuple(path.split("."))) if i is not None]
        found.append(IdCandidate(path, len(ids), len(set(ids)), len(objects)))
    return sorted(
        found,
        key=lambda c: (not (c.id_like and c.unique), -c.present, c.path.count("."), c.path),
    )


def choose_id(candidates: list[IdCandidate]) -> tuple[IdCandidate | None, list[IdCandidate]]:
    """(the id field, or None) and the candidates to show when there is none.

    The id field: the one id-like field with a distinct value in every item; of several,
    a top-level ``id`` (the common convention), else none (ambiguous). Fields present in
    only some items count when nothing is present in all of them (items without an id
    keep their slot)."""
    unique = [c for c in candidates if c.id_like and c.unique]
    everywhere = [c for c in unique if c.present == c.of]
    pool = everywhere or unique
    if len(pool) == 1:
        return pool[0], pool
    plain = [c for c in pool if c.path == "id"]
    if len(plain) == 1:
        return plain[0], pool
    if pool:
        return None, pool
    return None, [c for c in candidates if c.unique]


def feed_like(doc: Any, array: ArrayCandidate) -> bool:
    """An array of many objects (``MANY_ITEMS`` or more) with an id-like field that is
    distinct in every item that has it: what a feed looks like."""
    if array.objects < MANY_ITEMS:
        return False
    items = items_at(doc, array.path)
    return items is not None and any(c.id_like and c.unique for c in find_ids(items))


def choose_array(doc: Any, arrays: list[ArrayCandidate]) -> ArrayCandidate | None:
    """The feed among several arrays of objects when exactly one of them looks like a feed
    (``feed_like``) and the others do not; None when that leaves a choice open."""
    if len(arrays) == 1:
        return arrays[0]
    feeds = [a for a in arrays if feed_like(doc, a)]
    return feeds[0] if len(feeds) == 1 else None


def items_at(doc: Any, path: str) -> list[Any] | None:
    """The array at a route's dotted ``items`` path, or None when absent or not an array."""
    try:
        node = dig(doc, tuple(path.split(".")) if path else ())
    except ItemsNotFound:
        return None
    return node if isinstance(node, list) else None
