"""The built-in items plugin's helpers: dig a dotted path, read each item's id."""

from __future__ import annotations

import pytest

from plugins.builtin.dotted import dig, item_ids
from plugins.context import ItemsNotFound


def test_dig() -> None:
    doc = {"data": {"children": [{"x": 1}, {"x": 2}]}}
    assert dig(doc, ("data", "children", "1", "x")) == 2
    with pytest.raises(ItemsNotFound):
        dig(doc, ("data", "nope"))


def test_item_ids_strings_and_integers_only() -> None:
    items = [{"id": "a"}, {"id": 7}, {"id": True}, {"id": 1.5}, {}, "x", {"id": None}]
    assert item_ids(items, ("id",)) == ["a", "7", None, None, None, None, None]
    assert item_ids([{"d": {"id": 3}}, {"d": 1}], ("d", "id")) == ["3", None]
