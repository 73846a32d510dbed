"""The "writing a plugin" page runs: its example is extracted from plugins/README.md,
imported as a third-party module, loaded by the registry and driven; and it is the same
code as plugins/examples.py, which the e2e tests use from routes.yaml."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from plugins import ItemsNotFound
from plugins.context import FeedContext, RequestView
from plugins.registry import PluginLoadError
from plugins.testing import apply, context, load

ROOT = Path(__file__).resolve().parents[3]
README = (ROOT / "plugins" / "README.md").read_text()
EXAMPLES = (ROOT / "plugins" / "examples.py").read_text()


def readme_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, re.S)


def example_block() -> str:
    found = re.search(r"<!-- example: favorite-categories -->\n```python\n(.*?)```", README, re.S)
    assert found, "plugins/README.md lost its example"
    return found.group(1)


@pytest.fixture
def readme_module(tmp_path: Path) -> Iterator[str]:
    name = f"readme_example_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(example_block())
    sys.path.insert(0, str(tmp_path))
    try:
        yield name
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


def test_readme_example_is_examples_py() -> None:
    marked = re.search(
        r"# --8<-- \[start:favorite-categories\]\n(.*?)\n+# --8<-- \[end:favorite-categories\]",
        EXAMPLES,
        re.S,
    )
    assert marked is not None
    assert marked.group(1).strip() in example_block()


def test_readme_example_loads_and_lifts_favorites(readme_module: str) -> None:
    plugin = load(f"{readme_module}:FavoriteCategories", lift=1.0)
    assert plugin.vary == ("Cookie",)
    items = [
        {"id": "a", "category": "rock"},
        {"id": "b", "category": "jazz"},
        {"id": "c", "category": "pop"},
        {"id": "d", "category": ["not", "a", "string"]},
    ]
    scores = np.array([0.9, 0.6, 0.5, 0.95], dtype=np.float32)  # lift: + the 0.45 range
    ctx = context(items, scores=scores, cookies={"fav": "jazz,blues"})
    assert [it["id"] for it in apply(ctx, plugin)] == ["b", "d", "a", "c"]
    no_cookie = context(items, scores=scores)
    assert [it["id"] for it in apply(no_cookie, plugin)] == ["d", "a", "b", "c"]


def test_readme_example_options_are_checked(readme_module: str) -> None:
    with pytest.raises(PluginLoadError, match=r"plugin\.lift: Input should be less than"):
        load(f"{readme_module}:FavoriteCategories", lift=2)
    with pytest.raises(PluginLoadError, match=r"plugin\.colour: unknown option"):
        load(f"{readme_module}:FavoriteCategories", colour="red")


def test_readme_test_snippet_passes(readme_module: str) -> None:
    snippet = next(b for b in readme_blocks() if "def test_favorites_come_first" in b)
    namespace: dict[str, object] = {}
    exec(snippet.replace("mypkg.rules", readme_module), namespace)
    namespace["test_favorites_come_first"]()  # type: ignore[operator]


def test_graphql_edges_example() -> None:
    plugin = load("plugins.examples:GraphQLEdges", connection="data.viewer.feed")
    edges = [{"cursor": "c0", "node": {"id": "x"}}, {"cursor": "c1", "node": {"id": 5}}, 3]
    doc = {"data": {"viewer": {"feed": {"edges": edges}}}}
    ctx = FeedContext(None, RequestView({}, {}, {}), "r", {}, doc=doc)
    assert plugin.find_items is not None
    (found,) = plugin.find_items(ctx)
    assert found.items is edges and found.ids == ["x", None, None]
    ctx.doc = {"data": {"viewer": {}}}
    with pytest.raises(ItemsNotFound):
        plugin.find_items(ctx)
