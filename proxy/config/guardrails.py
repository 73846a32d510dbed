"""``guardrails:`` in ``routes.yaml``: the limits past which an experiment arm is taken off
the air and its users sent to the route's default arm (proxy/experiments/guardrails.py).

    guardrails: {not_applied: +5pp, added_p99_ms: +20, ctr: -10%}

on an experiment (that arm) or on a route (each of its arms without its own). Each limit
is a one-sided sequential test against the default arm: the arm trips only once the test
is sure the arm is worse than the limit, not when it merely looks so.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["Guardrails"]

_NUMBER = r"([+-]?\d+(?:\.\d+)?)"


def _parse(value: Any, suffix: str, what: str) -> Any:
    """``+5pp``, ``-10%``, ``+20ms`` or a plain number; the number as written."""
    if isinstance(value, bool):
        raise ValueError(f"want {what}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        found = re.fullmatch(_NUMBER + r"\s*" + suffix, value.strip())
        if found:
            return float(found.group(1))
    raise ValueError(f"want {what}, e.g. {_EXAMPLES[suffix]}")


_EXAMPLES = {"pp": "+5pp", "%": "-10%", "(?:ms)?": "+20"}


class Guardrails(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # The arm's share of requests not re-ranked for its own reasons (model error, budget,
    # plugin error, internal error), in percentage points above the default arm's.
    not_applied: Annotated[float, Field(ge=0, le=100)] | None = None
    # The arm's p99 of rankgate's own time per request, in ms above the default arm's.
    added_p99_ms: Annotated[float, Field(ge=0, le=60_000)] | None = None
    # The arm's CTR by unit relative to the default arm's, in percent (negative).
    ctr: Annotated[float, Field(gt=-100, le=0)] | None = None
    # Error rate of all the arm's guardrails together (split evenly between them): lower
    # than the report's 0.05, since a trip acts (it ends the arm's traffic) and the arms
    # worth stopping are far past their limits. Then the size at which the sequential
    # boundary is tightest, and the least data per arm before any reading.
    alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.01
    expected: Annotated[int, Field(ge=10)] = 5000
    min_requests: Annotated[int, Field(ge=10)] = 100
    min_units: Annotated[int, Field(ge=10)] = 100
    # A user counts for the CTR test with their first exposures only: one heavy user
    # (a bot, a power user) would otherwise be most of an arm, and the delta method's
    # variance is wrong when one unit dominates (an A/A pair then trips).
    max_exposures_per_unit: Annotated[int, Field(ge=1)] = 50

    @field_validator("not_applied", mode="before")
    @classmethod
    def _pp(cls, value: Any) -> Any:
        return None if value is None else _parse(value, "pp", "percentage points")

    @field_validator("ctr", mode="before")
    @classmethod
    def _pct(cls, value: Any) -> Any:
        return None if value is None else _parse(value, "%", "a relative change in percent")

    @field_validator("added_p99_ms", mode="before")
    @classmethod
    def _ms(cls, value: Any) -> Any:
        return None if value is None else _parse(value, "(?:ms)?", "milliseconds")

    @model_validator(mode="after")
    def _some(self) -> Guardrails:
        if not self.limits():
            raise ValueError("give at least one of not_applied, added_p99_ms, ctr")
        return self

    def limits(self) -> list[str]:
        """The guardrails set, by name."""
        return [
            name
            for name in ("not_applied", "added_p99_ms", "ctr")
            if getattr(self, name) is not None
        ]
