"""Bodies read by a route's plan: the items found as the full parse finds them, and the
response the body itself with the items' bytes in the new order."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from plugins.builtin.dotted import dig, item_ids
from plugins.registry import load
from plugins.run import RoutePlugins
from plugins.spec import PluginSpec
from proxy.feed import splice
from proxy.routing.reads import BodyPlan, plan


def route_plan(items: str = "items", item_id: str = "id", rules: tuple[Any, ...] = ()) -> BodyPlan:
    spec = PluginSpec(use="dotted", items=items, item_id=item_id)
    loaded = [load(PluginSpec.model_validate(r), f"rules[{k}]") for k, r in enumerate(rules)]
    found = plan(RoutePlugins(items=load(spec, "items", implicit=True), rules=tuple(loaded)))
    assert found is not None
    return found


def spaced(value: Any, rng: random.Random) -> bytes:
    """JSON text with random whitespace and the origin's own spellings of numbers."""
    ws = lambda: rng.choice([b"", b" ", b"\n  ", b"\t"])  # noqa: E731
    if isinstance(value, dict):
        inner = b",".join(
            ws() + orjson.dumps(k) + ws() + b":" + ws() + spaced(v, rng) + ws()
            for k, v in value.items()
        )
        return b"{" + inner + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(ws() + spaced(v, rng) + ws() for v in value) + b"]"
    if isinstance(value, float):
        return rng.choice([repr(value).encode(), f"{value:.3E}".encode()])
    if isinstance(value, str) and rng.random() < 0.3:
        return b'"' + "".join(f"\\u{ord(c):04x}" for c in value).encode() + b'"'
    return orjson.dumps(value)


def random_item(rng: random.Random, k: int, nested: bool) -> dict[str, Any]:
    ident: Any = rng.choice([f"i{k}", k, None, 1.5, True, [k], f"é{k}"])
    item: dict[str, Any] = {"title": f't{k} "q" ü', "price": rng.random() * 100}
    if rng.random() < 0.9:
        item["id"] = ident
    if rng.random() < 0.3:
        item["tags"] = [rng.random(), {"deep": [1, 2, {"id": "not-me"}]}]
    return {"kind": "t3", "data": item} if nested else item


@pytest.mark.parametrize("seed", range(60))
def test_random_bodies_match_the_full_parse_and_keep_every_items_bytes(seed: int) -> None:
    rng = random.Random(seed)
    nested = seed % 3 == 0
    path, id_path = ("data", "children") if nested else ("items",), "data.id" if nested else "id"
    items = [random_item(rng, k, nested) for k in range(rng.randint(1, 40))]
    doc: dict[str, Any] = {"meta": {"page": 1, "v": 1.5e-7, "s": "a\\b"}, "after": "x"}
    doc["data" if nested else "items"] = {"children": items} if nested else items
    raw = spaced(doc, rng)
    found = splice.find(raw, route_plan(".".join(path), id_path))
    assert found is not None
    full = orjson.loads(raw)
    assert found.array.ids == item_ids(dig(full, path), tuple(id_path.split(".")))
    order = list(range(len(items)))
    rng.shuffle(order)
    out = found.join(order)
    expected = orjson.loads(raw)
    target = dig(expected, path)
    target[:] = [target[i] for i in order]
    assert orjson.loads(out) == expected
    # Every item's bytes are the origin's, and everything outside the array too.
    parts = [bytes(p) for p in found.parts]
    assert out == raw[: found.start] + b",".join(parts[i] for i in order) + raw[found.end :]
    for p in parts:
        assert p in raw


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b'{"other": []}',
        b'{"items": {"a": 1}}',
        b'{"items": []}',
        b'{"items": [1, 2]}',
        b'{"items": [{"id": "a"}, "b"]}',
        b"[1, 2, 3]",
        b"",
        b'{"items": [{"id": "\\ud800"}]}',
    ],
)
def test_bodies_the_plan_cannot_take_go_to_the_full_parse(raw: bytes) -> None:
    assert splice.find(raw, route_plan()) is None


def test_the_body_itself_as_the_array() -> None:
    raw = b' [ {"id": "a", "x": [1]} ,{"id": "b"}\n] '
    found = splice.find(raw, route_plan(items=""))
    assert found is not None
    assert found.join([1, 0]) == b' [ {"id": "b"},{"id": "a", "x": [1]}\n] '


def test_items_hold_only_the_keys_the_rules_read() -> None:
    raw = b'{"items": [{"id": "a", "sponsored": true, "title": "x", "stats": {"ctr": 2}}]}'
    rules = (
        {"use": "pin", "field": "sponsored"},
        {"use": "boost", "field": "stats.ctr", "weight": 1},
    )
    found = splice.find(raw, route_plan(rules=rules))
    assert found is not None
    assert found.array.items == [{"id": "a", "sponsored": True, "stats": {"ctr": 2}}]


def test_a_body_sent_again_is_not_scanned_again() -> None:
    plan = route_plan()
    raw = b'{"items": [{"id": "a", "n": 1}, {"id": "b"}], "page": 1}'
    first = splice.find(raw, plan)
    again = splice.find(bytes(bytearray(raw)), plan)  # equal bytes, another object
    assert first is not None and again is first
    assert again.join([1, 0]) == b'{"items": [{"id": "b"},{"id": "a", "n": 1}], "page": 1}'
    other = splice.find(raw.replace(b'"b"', b'"c"'), plan)
    assert other is not None and other is not first
    assert other.array.ids == ["a", "c"] and first.array.ids == ["a", "b"]
    assert splice.find(b'{"items": []}', plan) is None  # a body it cannot take: not kept
    assert plan.memo is not None and len(plan.memo) == 2


def test_a_route_with_rules_reads_every_body() -> None:
    # Its items go to the rules: one request's must not be another's.
    plan = route_plan(rules=({"use": "pin", "field": "sponsored"},))
    raw = b'{"items": [{"id": "a", "sponsored": true}]}'
    assert plan.memo is None
    assert splice.find(raw, plan) is not splice.find(raw, plan)
