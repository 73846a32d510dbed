"""Reading a field of every item, and matching it against a condition from the options.

JSON objects have to be walked in Python; these helpers do it once per item with one
list comprehension and hand numpy an array, so rules stay vectorized after that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from pydantic import Field, field_validator, model_validator

from plugins.builtin.dotted import check_dotted as _check_dotted
from plugins.builtin.dotted import split_dotted
from plugins.hooks import PluginOptions

Scalar = str | int | float | bool | None


def dotted(path: str) -> tuple[str, ...]:
    return split_dotted(path)


def check_dotted(value: str) -> str:
    """A field path: dotted, and not empty (a field is inside an item)."""
    if not value:
        raise ValueError("not a dotted path: ''")
    return _check_dotted(value)


def _dig(item: Any, path: tuple[str, ...]) -> Any:
    node = item
    for part in path:
        if type(node) is dict:
            node = node.get(part)
        elif type(node) is list and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def values(items: Sequence[Any], path: tuple[str, ...]) -> list[Any]:
    """The value at ``path`` in each item (objects, and arrays by index); None where
    absent. One comprehension, no call per item, for the common one-key path."""
    if len(path) == 1:
        key = path[0]
        return [it.get(key) if type(it) is dict else None for it in items]
    return [_dig(it, path) for it in items]


def _key(value: Any) -> tuple[str, Any] | None:
    # true must not equal 1 and "1" must not equal 1: JSON types are kept apart.
    t = type(value)
    if t is bool:
        return ("b", value)
    if t is int or t is float:
        return ("n", value)
    if t is str:
        return ("s", value)
    if value is None:
        return ("z", None)
    return None  # objects and arrays match nothing


def numbers(found: Sequence[Any], default: float) -> np.ndarray:
    """float64 array of the numeric values (true/false and others count as ``default``)."""
    return np.array(
        [v if (type(v) is int or type(v) is float) else default for v in found],
        dtype=np.float64,
    )


def matcher(
    path: tuple[str, ...], wanted: Sequence[Scalar] | None
) -> Callable[[Sequence[Any]], np.ndarray]:
    """items -> bool mask: the field equals one of ``wanted`` (JSON types kept apart; a
    missing field counts as null), or is JSON-truthy when ``wanted`` is None."""
    if wanted is None:
        return lambda items: np.array([bool(v) for v in values(items, path)], dtype=bool)
    if all(type(w) is str for w in wanted):  # the common case: a fast set test
        strings = frozenset(wanted)
        return lambda items: np.array(
            [type(v) is str and v in strings for v in values(items, path)], dtype=bool
        )
    if all(type(w) is bool for w in wanted):
        flags = tuple(wanted)
        return lambda items: np.array(
            [type(v) is bool and v in flags for v in values(items, path)], dtype=bool
        )
    keys = frozenset(_key(w) for w in wanted)
    return lambda items: np.array([_key(v) in keys for v in values(items, path)], dtype=bool)


class FieldMatch(PluginOptions):
    """``field`` (a dotted path in an item) and an optional condition: ``equals: V`` or
    ``in: [V, ...]`` (JSON types kept apart: true is not 1, "1" is not 1; a missing
    field counts as null); with neither, the field matches when it is JSON-truthy
    (true, a non-zero number, a non-empty string, array or object)."""

    field: str
    equals: Scalar = None
    in_: tuple[Scalar, ...] | None = Field(default=None, alias="in")

    @field_validator("field")
    @classmethod
    def _field(cls, value: str) -> str:
        return check_dotted(value)

    @model_validator(mode="after")
    def _one_condition(self) -> FieldMatch:
        if "equals" in self.model_fields_set and self.in_ is not None:
            raise ValueError("give 'equals' or 'in', not both")
        return self

    def compile(self) -> Callable[[Sequence[Any]], np.ndarray]:
        """A function items -> bool mask of the items whose field matches."""
        if self.in_ is not None:
            return matcher(dotted(self.field), self.in_)
        if "equals" in self.model_fields_set:
            return matcher(dotted(self.field), (self.equals,))
        return matcher(dotted(self.field), None)
