"""The shape of the code, held: small modules and functions in proxy/ and plugins/, and
imports that point one way (plugins/ and models/ import nothing from proxy/)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 350
MAX_FUNCTION_LINES = 60
CODE = sorted(p for d in ("proxy", "plugins") for p in (ROOT / d).glob("*.py"))


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", CODE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_modules_and_functions_stay_small(path: Path) -> None:
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{path.name}: split it"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"  # type: ignore[operator]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES  # type: ignore[operator]
    ]
    assert not long, f"{path.name}: {long}"


@pytest.mark.parametrize("package", ["plugins", "models"])
def test_the_plugin_api_and_the_workshop_import_nothing_of_the_proxy(package: str) -> None:
    offenders = {
        f"{p.name}: {name}"
        for p in (ROOT / package).glob("*.py")
        for name in imported(p)
        if name == "proxy" or name.startswith("proxy.")
    }
    assert not offenders
