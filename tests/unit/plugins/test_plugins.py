"""Built-in rules on constructed cases, and the load-time checks of the registry."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from plugins.registry import BUILTINS, PluginLoadError, check_hooks, resolve
from plugins.testing import apply, context, load
from proxy.config.routes import Route
from proxy.routing.plugins import compile_plugins


def ids_of(items: list[dict[str, Any]]) -> list[str]:
    return [it["id"] for it in items]


def feed(n: int, **fields: dict[int, Any]) -> list[dict[str, Any]]:
    """n items i0..i{n-1}; fields={"sponsored": {2: True}} sets item 2's field."""
    items: list[dict[str, Any]] = [{"id": f"i{k}"} for k in range(n)]
    for name, values in fields.items():
        for k, v in values.items():
            items[k][name] = v
    return items


# -- pin ------------------------------------------------------------------------------


def test_pin_keeps_slots_exactly() -> None:
    items = feed(8, sponsored={1: True, 5: True, 6: False})
    scores = np.arange(8, dtype=np.float32)  # ascending: the model reverses the feed
    got = ids_of(apply(context(items, scores=scores), load("pin", field="sponsored")))
    assert got[1] == "i1" and got[5] == "i5"
    # The others are ranked around the pins, by score.
    assert [g for g in got if g not in ("i1", "i5")] == ["i7", "i6", "i4", "i3", "i2", "i0"]


def test_pin_with_in_and_dotted_field() -> None:
    items = feed(5, meta={0: {"kind": "ad"}, 3: {"kind": "promo"}, 4: {"kind": "post"}})
    pin = load("pin", field="meta.kind", **{"in": ["ad", "promo"]})
    got = ids_of(apply(context(items, scores=np.arange(5, dtype=np.float32)), pin))
    assert got == ["i0", "i4", "i2", "i3", "i1"]


def test_pin_equals_keeps_json_types_apart() -> None:
    items = feed(4, flag={0: 1, 1: True, 2: "1"})
    pin = load("pin", field="flag", equals=True)
    ctx = context(items, scores=np.arange(4, dtype=np.float32))
    apply(ctx, pin)
    assert ctx.fixed.tolist() == [False, True, False, False]  # not 1, not "1"


# -- filter ---------------------------------------------------------------------------


def test_filter_by_field_condition() -> None:
    items = feed(6, status={1: "hidden", 3: "deleted", 4: "ok"})
    drop = load("filter", field="status", **{"in": ["hidden", "deleted"]})
    got = ids_of(apply(context(items, scores=np.arange(6, dtype=np.float32)), drop))
    assert got == ["i5", "i4", "i2", "i0"]


def test_filter_by_cookie_ids() -> None:
    items = feed(5)
    drop = load("filter", cookie="seen")
    ctx = context(items, cookies={"seen": "i0%2Ci3,nope"})  # URL-encoded commas too
    assert ids_of(apply(ctx, drop)) == ["i1", "i2", "i4"]
    assert drop.vary == ("Cookie",)


def test_filter_drops_unscored_items_and_pins_move_up() -> None:
    items = feed(6, ad={4: True})
    items[2] = {"title": "no id", "hidden": True}
    ids = [it.get("id") for it in items]
    ctx = context(items, ids=ids, scores=np.arange(5, dtype=np.float32))
    got = apply(ctx, load("pin", field="ad"), load("filter", field="hidden"))
    # Dropped: the unscored item. Pinned i4 keeps index 4 (the array has 5 left).
    assert len(got) == 5 and got[4]["id"] == "i4"
    assert [it["id"] for it in got[:4]] == ["i5", "i3", "i1", "i0"]


def test_pinned_beyond_a_shortened_array_goes_to_the_end() -> None:
    items = feed(5, ad={4: True}, gone={0: True, 1: True})
    ctx = context(items, scores=np.arange(5, dtype=np.float32))
    got = ids_of(apply(ctx, load("pin", field="ad"), load("filter", field="gone")))
    assert got == ["i3", "i2", "i4"]


# -- boost ----------------------------------------------------------------------------


def test_boost_adds_weight_times_field() -> None:
    items = feed(4, fresh={0: 1.0, 1: 0.0, 2: "x", 3: True})
    scores = np.array([0.0, 0.5, 0.4, 0.45], dtype=np.float32)
    ctx = context(items, scores=scores)
    got = ids_of(apply(ctx, load("boost", field="fresh", weight=0.6)))
    # i0: 0.6; strings and booleans count as missing (0).
    assert got == ["i0", "i1", "i3", "i2"]
    np.testing.assert_allclose(ctx.scores, [0.6, 0.5, 0.4, 0.45], rtol=1e-6)


def test_boost_missing_value_option() -> None:
    items = feed(2, fresh={0: 0.0})
    ctx = context(items, scores=np.array([0.0, 0.0], dtype=np.float32))
    apply(ctx, load("boost", field="fresh", weight=1.0, missing=-1.0))
    assert ctx.scores.tolist() == [0.0, -1.0]


# -- diversify ------------------------------------------------------------------------


def clustered() -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray]:
    """i0, i1, i2 near-duplicates (the top three by score), i3, i4 elsewhere."""
    items = feed(5)
    emb = np.array(
        [[1, 0, 0], [0.99, 0.1, 0], [0.98, 0.12, 0.05], [0, 1, 0], [0, 0, 1]], dtype=np.float32
    )
    scores = np.array([1.0, 0.95, 0.9, 0.6, 0.5], dtype=np.float32)
    return items, emb, scores


def test_diversify_spreads_near_duplicates() -> None:
    items, emb, scores = clustered()
    by_score = ids_of(apply(context(items, scores=scores, embeddings=emb)))
    assert by_score == ["i0", "i1", "i2", "i3", "i4"]
    got = ids_of(
        apply(context(items, scores=scores, embeddings=emb), load("diversify", **{"lambda": 0.5}))
    )
    assert got[0] == "i0"  # the most relevant item still leads
    assert set(got[1:3]) == {"i3", "i4"}  # the distinct items come up before the copies
    assert set(got[3:]) == {"i1", "i2"}


def test_diversify_lambda_one_is_score_order_and_depth_limits_mmr() -> None:
    items, emb, scores = clustered()
    got = ids_of(
        apply(context(items, scores=scores, embeddings=emb), load("diversify", **{"lambda": 1}))
    )
    assert got == ["i0", "i1", "i2", "i3", "i4"]
    shallow = load("diversify", **{"lambda": 0.5, "depth": 2})
    got = ids_of(apply(context(items, scores=scores, embeddings=emb), shallow))
    assert got[:2] == ["i0", "i3"] and got[2:] == ["i1", "i2", "i4"]  # the rest by score


def test_diversify_leaves_pins_alone() -> None:
    items, emb, scores = clustered()
    items[1]["ad"] = True
    ctx = context(items, scores=scores, embeddings=emb)
    got = ids_of(apply(ctx, load("pin", field="ad"), load("diversify", **{"lambda": 0.3})))
    assert got[1] == "i1" and got[0] == "i0"


# -- annotate -------------------------------------------------------------------------


def test_annotate_writes_the_scores_that_ordered_the_feed() -> None:
    rng = np.random.default_rng(5)
    items: list[Any] = feed(10)
    items[3] = {"title": "no id", "_score": "origin's"}  # unscored: left as it is
    items.append("a bare string")  # scored below, but not an object: left as it is
    ids = [it.get("id") if isinstance(it, dict) else None for it in items]
    ids[-1] = "s"
    scores = (rng.standard_normal(10) * 5).astype(np.float32)
    ctx = context(items, ids=ids, scores=scores)
    served = apply(ctx, load("annotate"))

    assert served[3] == {"title": "no id", "_score": "origin's"} and served[3] is items[3]
    assert "a bare string" in served
    # Each object carries the score that placed it (rounded to 4 places, a JSON number).
    want = dict(zip([i for i in ids if i is not None], scores.astype(float), strict=True))
    written = [(it["id"], it["_score"]) for it in served if isinstance(it, dict) and "id" in it]
    assert len(written) == 9
    for ident, score in written:
        assert type(score) is float and score == round(want[ident], 4)
    along = [score for _, score in written]
    assert along == sorted(along, reverse=True)  # the served order is by these numbers


def test_annotate_after_boost_and_pin_writes_the_final_scores() -> None:
    items = feed(5, fresh={0: 1.0, 4: 2.0}, ad={2: True})
    scores = np.array([0.5, 0.4, 0.3, 0.2, 0.1], dtype=np.float32)
    ctx = context(items, scores=scores)
    served = apply(
        ctx,
        load("pin", field="ad"),
        load("boost", field="fresh", weight=0.25),
        load("annotate", field="score", round=6),
    )
    assert ids_of(served) == ["i0", "i4", "i2", "i1", "i3"]  # i2 pinned at index 2
    got = {it["id"]: it["score"] for it in served}
    assert got == {"i0": 0.75, "i1": 0.4, "i2": 0.3, "i3": 0.2, "i4": 0.6}
    np.testing.assert_allclose([got[i] for i in ids_of(feed(5))], ctx.scores, atol=1e-6)
    unpinned = [got[i] for i in ids_of(served) if i != "i2"]
    assert unpinned == sorted(unpinned, reverse=True)
    assert "_score" not in served[0]  # only the configured key


def test_annotate_under_diversify_writes_scores_not_places() -> None:
    items, emb, scores = clustered()
    ctx = context(items, scores=scores, embeddings=emb)
    served = apply(ctx, load("diversify", **{"lambda": 0.5}), load("annotate", round=2))
    assert {it["id"]: it["_score"] for it in served} == {
        "i0": 1.0,
        "i1": 0.95,
        "i2": 0.9,
        "i3": 0.6,
        "i4": 0.5,
    }
    assert ids_of(served)[1] in ("i3", "i4")  # diversify's order stands


def test_annotate_rounds_and_writes_no_negative_zero() -> None:
    ctx = context(feed(3), scores=[-0.00001, 1.23456789, -2.5])
    served = apply(ctx, load("annotate", round=0))
    assert [(it["id"], it["_score"]) for it in served] == [("i1", 1.0), ("i0", 0.0), ("i2", -2.0)]
    assert str(served[1]["_score"]) == "0.0"


def test_annotate_must_be_the_last_rule() -> None:
    with pytest.raises(PluginLoadError) as err:
        compile_plugins(
            route(
                plugins=[
                    {"use": "annotate"},
                    {"use": "boost", "field": "f", "weight": 1},
                    {"use": "sources", "from": ["header:X-Uid"]},  # a user plugin: no matter
                ]
            ),
            "routes[2]",
        )
    assert err.value.problems == [
        "routes[2].plugins[0]: annotate writes the final scores into the items, so it must "
        "come after every other rules plugin (boost at routes[2].plugins[1] follows it)"
    ]
    compiled = compile_plugins(
        route(
            plugins=[
                {"use": "boost", "field": "f", "weight": 1},
                {"use": "annotate"},
                {"use": "annotate", "field": "s2", "round": 1},  # several at the end: fine
                {"use": "sources", "from": ["header:X-Uid"]},
            ]
        ),
        "routes[2]",
    )
    assert [p.name for p in compiled.rules] == ["boost", "annotate", "annotate"]


# -- registry: names, hooks, options --------------------------------------------------


def test_builtins_load_by_short_name() -> None:
    for name in BUILTINS:
        cls = resolve(name)
        assert check_hooks(cls) == [], name


@pytest.fixture
def plugin_module(tmp_path: Path) -> Iterator[str]:
    """A third-party module on sys.path (a real file, imported by the registry)."""
    name = f"thirdparty_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """\
            from plugins import FeedContext, PluginOptions

            class Reverse:
                class Options(PluginOptions):
                    factor: float = 1.0

                def __init__(self, options):
                    self.factor = options.factor

                def rerank(self, ctx: FeedContext) -> None:
                    ctx.scores = -self.factor * ctx.scores

            class Misnamed:
                def rerenk(self, ctx):
                    pass

            class TwoArgs:
                def rerank(self, ctx, extra):
                    pass

            class AsyncRerank:
                async def rerank(self, ctx):
                    pass

            class SyncPrefetch:
                def prefetch(self, ctx):
                    pass
                def rerank(self, ctx):
                    pass

            class NoHooks:
                pass

            class Helpers:
                def _helper(self):
                    return 1
                vary = ("X-Thing",)
                def resolve_user(self, ctx):
                    return "u1"
            """
        )
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield name
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


def test_module_class_loads_and_runs(plugin_module: str) -> None:
    plugin = load(f"{plugin_module}:Reverse", factor=2)
    got = ids_of(apply(context(feed(3), scores=[0.0, 1.0, 2.0]), plugin))
    assert got == ["i0", "i1", "i2"]
    assert plugin.name == f"{plugin_module}:Reverse"


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        ("Misnamed", "unknown hook 'rerenk'"),
        ("TwoArgs", "must take exactly (self, ctx)"),
        ("AsyncRerank", "hook rerank: must be a plain 'def'"),
        ("SyncPrefetch", "hook prefetch: must be 'async def'"),
        ("NoHooks", "defines no hook"),
    ],
)
def test_bad_hooks_refused_at_load(plugin_module: str, cls: str, message: str) -> None:
    with pytest.raises(PluginLoadError) as err:
        load(f"{plugin_module}:{cls}")
    assert message in str(err.value)
    assert str(err.value).startswith(f"plugin: {plugin_module}:{cls}: ")


def test_private_helpers_and_data_attributes_are_not_hooks(plugin_module: str) -> None:
    plugin = load(f"{plugin_module}:Helpers")
    assert plugin.resolve_user is not None and plugin.vary == ("X-Thing",)


def test_plugin_without_options_refuses_options(plugin_module: str) -> None:
    with pytest.raises(PluginLoadError, match=r"plugin\.x: unknown option"):
        load(f"{plugin_module}:Helpers", x=1)


@pytest.mark.parametrize(
    ("use", "options", "message"),
    [
        ("diversify", {"lambda": 1.5}, "plugin.lambda: must be 0..1"),
        ("diversify", {}, "plugin.lambda: required"),
        ("diversify", {"lambda": 0.5, "lamda": 1}, "plugin.lamda: unknown option"),
        ("pin", {}, "plugin.field: required"),
        ("pin", {"field": "a..b"}, "plugin.field: not a dotted path"),
        ("pin", {"field": "a", "equals": 1, "in": [1]}, "plugin: give 'equals' or 'in'"),
        ("filter", {}, "needs at least one of field, cookie, redis_set"),
        ("filter", {"redis_set": "seen"}, "plugin.redis_set: must contain {user}"),
        ("boost", {"field": "f", "weight": "x"}, "plugin.weight: Input should be a valid"),
        ("annotate", {"field": "a.b"}, "plugin.field: want a plain key name"),
        ("annotate", {"field": ""}, "plugin.field: want a plain key name"),
        ("annotate", {"round": -1}, "plugin.round: Input should be greater than or equal to 0"),
        ("annotate", {"round": 1.5}, "plugin.round: Input should be a valid integer"),
        ("annotate", {"digits": 2}, "plugin.digits: unknown option"),
        ("nope", {}, "plugin.use: unknown plugin 'nope'"),
        ("no_such_module_xyz:Thing", {}, "module 'no_such_module_xyz' is not an installed plugin"),
        ("plugins.examples:Nothing", {}, "has no 'Nothing'"),
        ("plugins.examples:np", {}, "is not a class"),
        ("bad name!", {}, "want a plugin name or 'module:Class'"),
    ],
)
def test_bad_options_and_names_refused(use: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(PluginLoadError) as err:
        load(use, **options)
    assert message in str(err.value)


def route(**kw: Any) -> Route:
    return Route.model_validate({"name": "r", "match": {"path": "/f"}, "model": "m", **kw})


def test_route_compiles_plugins_by_kind_with_yaml_paths() -> None:
    compiled = compile_plugins(
        route(
            plugins=[
                {"use": "sources", "from": ["header:X-Uid"]},
                {"use": "pin", "field": "ad"},
                {"use": "plugins.examples:GraphQLEdges", "connection": "data.feed"},
                {"use": "diversify", "lambda": 0.7},
            ]
        ),
        "routes[3]",
    )
    assert [p.name for p in compiled.user] == ["sources"]
    assert compiled.items is not None and compiled.items.name.endswith("GraphQLEdges")
    assert [p.name for p in compiled.rules] == ["pin", "diversify"]
    assert compiled.vary == ("X-Uid",)
    assert [p.where for p in compiled.rules] == ["routes[3].plugins[1]", "routes[3].plugins[3]"]


def test_route_problems_are_all_reported() -> None:
    with pytest.raises(PluginLoadError) as err:
        compile_plugins(
            route(
                plugins=[
                    {"use": "pin"},
                    {"use": "diversify", "lambda": -1},
                    {"use": "dotted"},
                    {"use": "plugins.examples:GraphQLEdges", "connection": "x"},
                ]
            ),
            "routes[0]",
        )
    assert err.value.problems == [
        "routes[0].plugins[0].field: required",
        "routes[0].plugins[1].lambda: must be 0..1",
        "routes[0].plugins[3]: a route has one items plugin (routes[0].plugins[2] is one)",
    ]


def test_user_plugins_and_an_explicit_user_list_conflict() -> None:
    with pytest.raises(PluginLoadError, match=r"routes\[0\]\.user: the route takes its user"):
        compile_plugins(
            route(user=["cookie:uid"], plugins=[{"use": "sources", "from": ["cookie:a"]}]),
            "routes[0]",
        )
    with pytest.raises(PluginLoadError, match=r"routes\[0\]\.items: the route finds"):
        compile_plugins(route(items="data", plugins=[{"use": "dotted"}]), "routes[0]")


def test_entry_point_group(tmp_path: Path) -> None:
    """A real distribution on sys.path: a dist-info with entry_points.txt and a module."""
    pkg = "ep_plugin_pkg"
    (tmp_path / f"{pkg}.py").write_text(
        "class Shout:\n    def rerank(self, ctx):\n        ctx.scores = ctx.scores * 2\n"
    )
    dist = tmp_path / "ep_plugin_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-plugin-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[rankgate.plugins]\nshout = {pkg}:Shout\n")
    sys.path.insert(0, str(tmp_path))
    try:
        plugin = load("shout")
        assert type(plugin.instance).__name__ == "Shout" and plugin.name == "shout"
        with pytest.raises(PluginLoadError, match=r"installed rankgate\.plugins entry points: "):
            load("whisper")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(pkg, None)


def test_builtin_names_cannot_be_shadowed_by_entry_points(tmp_path: Path) -> None:
    dist = tmp_path / "evil-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[rankgate.plugins]\njwt = os:getcwd\n")
    sys.path.insert(0, str(tmp_path))
    try:
        assert resolve("jwt").__name__ == "JwtUser"
    finally:
        sys.path.remove(str(tmp_path))


# -- the pipeline's checks on what a rule leaves behind ------------------------------


class _Vandal:
    """Leaves ctx in a state the pipeline must refuse (as a plugin error)."""

    def __init__(self, what: str) -> None:
        self.what = what

    def rerank(self, ctx: Any) -> None:
        if self.what == "nan":
            ctx.scores = ctx.scores * np.nan
        elif self.what == "shape":
            ctx.scores = ctx.scores[:1]
        elif self.what == "order":
            ctx.order = np.zeros(ctx.positions.size, dtype=np.intp)
        elif self.what == "mask":
            ctx.dropped = [True]


@pytest.mark.parametrize("what", ["nan", "shape", "order", "mask"])
def test_malformed_rule_output_is_a_plugin_failure(what: str) -> None:
    from plugins.run import LoadedPlugin, PluginFailure

    vandal = _Vandal(what)
    plugin = LoadedPlugin(name="vandal", where="x", instance=vandal, rerank=vandal.rerank)
    with pytest.raises(PluginFailure) as err:
        apply(context(feed(3)), plugin)
    assert err.value.plugin == "vandal" and isinstance(err.value.cause, ValueError)


def test_diversify_big_feeds_give_the_same_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past FULL_MATRIX_MAX items similarities are computed a row per slot: same result."""
    import plugins.builtin.diversify

    rng = np.random.default_rng(3)
    items = feed(300)
    emb = rng.standard_normal((300, 16)).astype(np.float32)
    scores = rng.standard_normal(300).astype(np.float32)
    plugin = load("diversify", **{"lambda": 0.6, "depth": 40})
    rows = ids_of(apply(context(items, scores=scores, embeddings=emb), plugin))
    monkeypatch.setattr(plugins.builtin.diversify, "FULL_MATRIX_MAX", 1000)
    matrix = ids_of(apply(context(items, scores=scores, embeddings=emb), plugin))
    assert rows == matrix and rows != ids_of(apply(context(items, scores=scores)))


def test_secrets_are_redacted_from_route_dumps() -> None:
    secret = "s" * 40
    spec = route(plugins=[{"use": "jwt", "secret": secret}, {"use": "pin", "field": "a"}])
    dumped = spec.model_dump(mode="json", exclude_none=True)["plugins"]
    assert dumped == [{"use": "jwt", "secret": "<redacted>"}, {"use": "pin", "field": "a"}]
    assert spec.plugins[0].options["secret"] == secret  # the plugin still gets it
