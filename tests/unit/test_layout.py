"""The shape of the code, held: packages that show the architecture, each with a face,
dependencies between them that point one way, no import circle, and small modules and
functions. The whole tree is walked (every folder of proxy/ and plugins/), and every
import counts, the ones inside functions too: a lazy import is still a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 350
MAX_FUNCTION_LINES = 60
MAX_MODULES_PER_FOLDER = 15

# The packages of proxy/, lowest first: a package may import only packages before it
# (DESIGN.md: config <- http, store <- routing <- feed <- readout <- experiments <- serve,
# preflight <- cli). Siblings of one rank (http and store) import neither each other.
ORDER: list[set[str]] = [
    {"outcome"},
    {"config"},
    {"http", "store"},
    {"routing"},
    {"feed"},
    {"readout"},
    {"experiments"},
    {"serve"},
    {"preflight"},
    {"edge"},
    {"cli"},
]
RANK = {name: rank for rank, names in enumerate(ORDER) for name in names}


def python_files(*tops: str) -> list[Path]:
    return sorted(
        p for top in tops for p in (ROOT / top).rglob("*.py") if "__pycache__" not in p.parts
    )


CODE = python_files("proxy", "plugins")
FOLDERS = sorted({p.parent for p in CODE})


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module this file imports, at any depth (relative imports resolved)."""
    names: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path.parent)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def package_of(module: str) -> str | None:
    """The proxy package a module belongs to (proxy.feed.rerank -> feed)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "proxy" and len(parts) > 1 and parts[1] in RANK else None


@pytest.mark.parametrize("path", CODE, ids=lambda p: str(p.relative_to(ROOT)))
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


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_family_of_modules_is_a_package_with_a_face(folder: Path) -> None:
    modules = sorted(p.stem for p in folder.glob("*.py") if p.name != "__init__.py")
    assert len(modules) <= MAX_MODULES_PER_FOLDER, f"{folder.name}: make packages of {modules}"
    face = folder / "__init__.py"
    assert face.is_file(), f"{folder}: no __init__.py"
    tree = ast.parse(face.read_text())
    assert ast.get_docstring(tree), f"{face}: say what the package offers"
    exported = [
        elt.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
        for elt in node.value.elts  # type: ignore[attr-defined]
    ]
    assert exported, f"{face}: no __all__"
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)} | {
        a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names
    }
    defined |= {
        t.id
        for n in tree.body
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name)
    }
    missing = [name for name in exported if name not in defined and name not in modules]
    assert not missing, f"{face}: __all__ names what it does not offer: {missing}"
    if folder.parent.name == "proxy":  # a wing of the proxy: its face names every module
        unnamed = [m for m in modules if m not in exported]
        assert not unnamed, f"{face}: say what {unnamed} offer, and name them in __all__"


def test_every_folder_of_proxy_is_a_known_package() -> None:
    found = {p.name for p in (ROOT / "proxy").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert found == set(RANK), "a new package needs its place in ORDER (and DESIGN.md)"


@pytest.mark.parametrize(
    "path", python_files("proxy"), ids=lambda p: str(p.relative_to(ROOT / "proxy"))
)
def test_packages_depend_one_way(path: Path) -> None:
    own = package_of(module_name(path))
    if own is None:  # proxy/__init__.py, proxy/__main__.py: the entry points
        return
    upward = sorted(
        name
        for name in imports(path)
        if (other := package_of(name)) is not None and other != own and RANK[other] >= RANK[own]
    )
    assert not upward, f"{own} may import only packages below it, not {upward}"


def test_no_import_circle_between_modules() -> None:
    """Module-level imports between proxy's modules form no circle (lazy ones may not
    either: they are a dependency all the same)."""
    modules = {module_name(p): p for p in python_files("proxy")}
    graph = {
        name: {m for m in imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }
    # A package's face imports nothing, so only module -> module edges matter.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (circle := visit(nxt)):
                return circle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (circle := visit(start)):
            pytest.fail(" -> ".join(circle))


def test_no_hidden_imports() -> None:
    """No module is imported by a name in a string (importlib), except where a plugin or
    command is loaded by the name a user wrote (plugins/registry.py) or an installed entry
    point names it."""
    allowed = {ROOT / "plugins" / "registry.py"}
    offenders = [
        str(p.relative_to(ROOT))
        for p in CODE
        if p not in allowed and "import_module(" in p.read_text()
    ]
    assert not offenders


@pytest.mark.parametrize("package", ["plugins", "models", "demo"])
def test_the_plugin_api_the_workshop_and_the_demo_sit_beside_the_proxy(package: str) -> None:
    """plugins/ and models/ import nothing of the proxy; the demo uses only its command
    line and public modules, and the proxy never imports the demo."""
    files = python_files(package)
    if package == "demo":
        offenders = [
            str(p.relative_to(ROOT))
            for p in python_files("proxy")
            if any(n == "demo" or n.startswith("demo.") for n in imports(p))
        ]
    else:
        offenders = [
            f"{p.relative_to(ROOT)}: {name}"
            for p in files
            for name in imports(p)
            if name == "proxy" or name.startswith("proxy.")
        ]
    assert not offenders
