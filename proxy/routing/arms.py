"""Choosing the model arm for a request: conditions on header, cookie, query, or a
sticky percentage of users.

Sticky bucketing::

    digest = sha256(f"{salt}:{user_id}".encode("utf-8"))
    bucket = int.from_bytes(digest[:8], "big") / 2**64 * 100     # in [0, 100)

and a user is in a ``percent: P`` experiment when ``bucket < P``. It depends on nothing
but the salt and the user id, so any process, restart, machine or offline job computes
the same assignment; raising P only adds users (those already in stay in). The
arithmetic is IEEE double: ``(double)u64 / 2^64 * 100`` gives the same bucket in any
language. The default salt is ``"{route}:{arm}"`` (see :func:`default_salt`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from plugins.context import RequestView
from proxy.config.routes import DEFAULT_ARM, Experiment, Route, Shadow, arm_name

__all__ = ["DEFAULT_ARM", "Arm", "ArmChooser", "bucket", "default_salt"]


@dataclass(frozen=True)
class Arm:
    name: str
    model: str  # a model name from the registry, "none" (control), or "A+B" (interleaved)
    models: tuple[str, ...] = ()  # the one model, or the interleaved ones (2 to 6)
    shadow: Shadow | None = None  # the arm's own, else the route's

    def __post_init__(self) -> None:
        if not self.models:
            object.__setattr__(self, "models", (self.model,))

    @property
    def interleaved(self) -> bool:
        return len(self.models) >= 2


def bucket(salt: str, user_id: str) -> float:
    """A user's sticky position in [0, 100) for a salt."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100.0


def default_salt(route: str, arm: str) -> str:
    # Route and arm: two routes or two arms never share buckets by accident, and a
    # percent change keeps the users already in. Renaming the arm reshuffles, so an
    # experiment that will be analysed should set `salt:` explicitly.
    return f"{route}:{arm}"


def _all_equal(wanted: Mapping[str, str] | None, have: Mapping[str, str]) -> bool:
    return wanted is None or all(have.get(k) == v for k, v in wanted.items())


@dataclass(frozen=True)
class CompiledExperiment:
    arm: Arm
    spec: Experiment
    salt: str

    def matches(self, view: RequestView, user_id: str | None) -> bool:
        when = self.spec.when
        if not (
            _all_equal(when.header, view.headers)
            and _all_equal(when.cookie, view.cookies)
            and _all_equal(when.query, view.query)
        ):
            return False
        if when.percent is not None:
            # No user, no stickiness: such a request stays on the default arm.
            return user_id is not None and bucket(self.salt, user_id) < when.percent
        return True

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **_describe_arm(self.arm),
            "when": self.spec.when.model_dump(mode="json", exclude_none=True),
        }
        if self.spec.when.percent is not None:
            out["when"]["salt"] = self.salt  # the effective salt, for offline analysis
        return out


@dataclass(frozen=True)
class ArmChooser:
    default: Arm
    experiments: tuple[CompiledExperiment, ...]

    @classmethod
    def for_route(cls, route: Route) -> ArmChooser:
        compiled = []
        for index, exp in enumerate(route.experiments):
            name = arm_name(index, exp)
            salt = exp.when.salt if exp.when.salt is not None else default_salt(route.name, name)
            arm = Arm(name, exp.label, exp.models, exp.shadow or route.shadow)
            compiled.append(CompiledExperiment(arm, exp, salt))
        return cls(Arm(DEFAULT_ARM, route.model, shadow=route.shadow), tuple(compiled))

    def all(self) -> list[Arm]:
        """Every arm, in the order they are tried; the default last."""
        return [e.arm for e in self.experiments] + [self.default]

    def choose(self, view: RequestView, user_id: str | None) -> Arm:
        for exp in self.experiments:
            if exp.matches(view, user_id):
                return exp.arm
        return self.default

    def vary_headers(self) -> list[str]:
        """Request headers whose values can change the arm (for the Vary header).

        Every condition of every experiment counts, not only the one that matched: a
        header that is absent (so its experiment did not match) chose the arm too."""
        names: list[str] = []
        for exp in self.experiments:
            names.extend((exp.spec.when.header or {}).keys())
            if exp.spec.when.cookie:
                names.append("Cookie")
        return names

    def describe(self) -> list[dict[str, Any]]:
        """The arms in the order they are tried; the default last."""
        return [e.describe() for e in self.experiments] + [_describe_arm(self.default)]


def _describe_arm(arm: Arm) -> dict[str, Any]:
    out: dict[str, Any] = {"arm": arm.name, "model": arm.model}
    if arm.interleaved:
        out["interleave"] = list(arm.models)
    if arm.shadow is not None:
        out["shadow"] = arm.shadow.model_dump(mode="json")
    return out
