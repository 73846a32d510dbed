"""Which modules a routes file may name (plugins/registry.py): installed plugins only.

A routes version is data, maybe pushed by someone else; importing a module runs its code.
So ``module:Class`` resolves only for the ``plugins`` package itself, a ``rankgate.plugins``
entry point's target, or a module under rankgate.yaml's ``plugins.paths``; anything else
is refused before any import."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from plugins.registry import PluginLoadError, load, resolve
from plugins.spec import PluginSpec

PLUGIN = "class Flip:\n    def rerank(self, ctx):\n        ctx.scores = -ctx.scores\n"


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory with a module (and a package) that rankgate.yaml could name."""
    name = f"mine_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(PLUGIN)
    pkg = tmp_path / f"{name}_pkg"
    (pkg / "rules").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "rules" / "__init__.py").write_text(PLUGIN)
    try:
        yield tmp_path, name
    finally:
        for mod in [m for m in sys.modules if m.startswith(name)]:
            sys.modules.pop(mod)


def test_an_arbitrary_module_is_refused_unimported() -> None:
    assert "this" not in sys.modules  # importing it prints the Zen of Python
    for use in ("this:X", "os:getcwd", "subprocess:Popen", "antigravity:X"):
        with pytest.raises(ValueError, match="is not an installed plugin") as err:
            resolve(use, ())
        assert "it was not imported" in str(err.value)
    assert "this" not in sys.modules and "antigravity" not in sys.modules


def test_a_routes_entry_names_the_yaml_path_and_the_rule() -> None:
    with pytest.raises(PluginLoadError) as err:
        load(PluginSpec(use="this:X"), "routes[0].plugins[0]")
    assert err.value.problems[0].startswith("routes[0].plugins[0].use: module 'this' is not")
    assert "plugins.paths in rankgate.yaml (none set)" in err.value.problems[0]
    assert "this" not in sys.modules


def test_modules_under_plugin_paths_load(plugin_dir: tuple[Path, str]) -> None:
    where, name = plugin_dir
    assert str(where) not in sys.path  # found through plugins.paths, not the Python path
    assert resolve(f"{name}:Flip", (where,)).__name__ == "Flip"
    assert resolve(f"{name}_pkg.rules:Flip", (where,)).__module__ == f"{name}_pkg.rules"
    with pytest.raises(ValueError, match="not an installed plugin"):
        resolve(f"{name}:Flip", (where / "elsewhere",))


def test_a_module_already_imported_from_elsewhere_is_refused(plugin_dir: tuple[Path, str]) -> None:
    """A plugins dir cannot lend its name to a module loaded from somewhere else."""
    where, _ = plugin_dir
    (where / "json.py").write_text(PLUGIN)  # shadows the stdlib's name
    with pytest.raises(ValueError, match=r"already imported from .*not from plugins\.paths"):
        resolve("json:Flip", (where,))


def test_the_plugins_package_and_builtins_stay_usable() -> None:
    assert resolve("plugins.examples:FavoriteCategories", ()).__name__ == "FavoriteCategories"
    assert resolve("pin", ()).__name__ == "Pin"


def test_an_entry_points_own_target_may_be_named(tmp_path: Path) -> None:
    pkg = "ep_target_pkg"
    (tmp_path / f"{pkg}.py").write_text(PLUGIN)
    dist = tmp_path / "ep_target_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-target-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[rankgate.plugins]\nflip = {pkg}:Flip\n")
    sys.path.insert(0, str(tmp_path))
    try:
        assert resolve(f"{pkg}:Flip", ()).__name__ == "Flip"
        with pytest.raises(ValueError, match="not an installed plugin"):
            resolve(f"{pkg}:Other", ())  # the same module, not the entry point's target
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(pkg, None)
