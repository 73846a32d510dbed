"""requirements/lock.txt against pyproject.toml: every dependency of the default, dev and
bench extras pinned, within its range (a dependency added or a range moved without
`make lock` would install unpinned or fail), and torch left out (the train extra is
pip's, from this machine's disk)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "lock.txt"


def lock_lines() -> list[tuple[NormalizedName, str, Marker | None]]:
    """(name, version, marker) for each pin of the lock."""
    out = []
    for line in LOCK.read_text().splitlines():
        spec, _, marker = line.partition(";")
        if "==" not in spec or spec.startswith(("#", " ")):
            continue
        name, _, version = spec.strip().partition("==")
        out.append((canonicalize_name(name), version, Marker(marker) if marker.strip() else None))
    return out


def locked() -> dict[NormalizedName, str]:
    """The pins that apply to this interpreter and platform."""
    return {n: v for n, v, m in lock_lines() if m is None or m.evaluate()}


def test_every_dependency_is_pinned_within_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    extras = project["optional-dependencies"]
    wanted += [Requirement(r) for r in extras["dev"] + extras["bench"]]
    # The dev extra takes others of the project's own (rankgate[otel]): their packages.
    for req in [r for r in wanted if r.name == project["name"]]:
        wanted.remove(req)
        wanted += [Requirement(r) for extra in req.extras for r in extras[extra]]
    pins: dict[NormalizedName, list[str]] = {}
    for name, version, _ in lock_lines():
        pins.setdefault(name, []).append(version)
    for req in wanted:
        versions = pins.get(canonicalize_name(req.name))
        assert versions, f"{req.name} is not in {LOCK.name}: run make lock"
        outside = [v for v in versions if not req.specifier.contains(v, prereleases=True)]
        assert outside == [], f"{req.name}=={outside} is outside {req}: run make lock"


def test_torch_stays_out() -> None:
    assert "torch" not in {name for name, _, _ in lock_lines()}
