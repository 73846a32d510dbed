"""docs/reference/configuration.md names every key of rankgate.yaml and routes.yaml: a
key added to the models in proxy/config/ without a line on that page fails here. (The
page's two example files are also written and checked by `rankgate check`, in
tests/docs/test_pages.py, and their defaults compared in tests/unit/config/.)"""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from proxy.config.routes import RoutesFile
from proxy.config.settings import Settings

PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "configuration.md"
INTERNAL = {"base_dir"}  # set by the loader, never written in a file


def keys(model: type[BaseModel], prefix: str = "") -> set[tuple[str, str]]:
    """(dotted path, key) for every field of ``model`` and the models inside it."""
    found: set[tuple[str, str]] = set()
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key in INTERNAL:
            continue
        found.add((f"{prefix}{key}", key))
        stack: list[object] = [field.annotation]
        while stack:
            kind = stack.pop()
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                found |= keys(kind, f"{prefix}{key}.")
            else:
                stack.extend(typing.get_args(kind))
    return found


@pytest.mark.parametrize("model", [Settings, RoutesFile], ids=["rankgate.yaml", "routes.yaml"])
def test_every_key_is_on_the_page(model: type[BaseModel]) -> None:
    text = PAGE.read_text()
    named = {path for path, key in keys(model) if re.search(rf"(?<![\w.]){re.escape(key)}:", text)}
    assert len(named) > 10
    assert sorted(path for path, _ in keys(model) if path not in named) == []
