"""Which routes parse only what they read, from their items source and rules."""

from __future__ import annotations

from plugins.registry import load
from plugins.run import LoadedPlugin, RoutePlugins
from plugins.spec import PluginSpec
from proxy.routing import reads
from proxy.routing.reads import plan


def custom(fields: tuple[str, ...] | None) -> LoadedPlugin:
    """A rule as the registry loads one from outside: its hooks, and what it declares."""
    return LoadedPlugin("custom", "rules[0]", object(), rerank=lambda ctx: None, item_fields=fields)


def plugins(
    items: str = "items", item_id: str = "id", *rules: dict[str, object] | LoadedPlugin
) -> RoutePlugins:
    spec = PluginSpec(use="dotted", items=items, item_id=item_id)
    loaded = tuple(
        r if isinstance(r, LoadedPlugin) else load(PluginSpec.model_validate(r), f"rules[{k}]")
        for k, r in enumerate(rules)
    )
    return RoutePlugins(items=load(spec, "items", implicit=True), rules=loaded)


def test_routes_whose_rules_name_their_fields_get_a_plan() -> None:
    assert plan(plugins()) is not None
    assert plan(plugins("data.children", "data.id")) is not None
    assert (
        plan(plugins("items", "id", custom(("rank",)), {"use": "diversify", "lambda": 0.5}))
        is not None
    )


def test_whole_items_array_indices_and_custom_items_plugins_parse_the_document() -> None:
    assert plan(plugins("items", "id", {"use": "annotate"})) is None
    assert plan(plugins("items", "id", custom(None))) is None
    assert plan(plugins("pages.0.items")) is None
    assert plan(plugins("items", "ids.0")) is None
    listed = load(PluginSpec(use="dotted"), "plugins[0]")  # listed, not the route's own
    assert plan(RoutePlugins(items=listed)) is None


def test_the_memo_is_bounded_by_bodies_and_by_bytes() -> None:
    memo = reads.BodyMemo()
    for k in range(reads.MEMO_BODIES + 5):
        memo.put(b"%d" % k, k)
    assert len(memo) == reads.MEMO_BODIES
    assert memo.get(b"0") is None and memo.get(b"%d" % (reads.MEMO_BODIES + 4)) is not None
    memo.get(b"5")  # used: the oldest no more
    big = reads.MEMO_BYTES // 8
    memo.put(b"x" * (big + 1), "too big")
    assert memo.get(b"x" * (big + 1)) is None
    for k in range(9):
        memo.put(bytes([k]) * big, k)
    assert memo.nbytes <= reads.MEMO_BYTES
    assert len(memo) == 8 and memo.get(bytes([0]) * big) is None
    assert memo.nbytes == 8 * big
