"""Choosing the model arm for a request: conditions on header, cookie, query, or a
sticky percentage of users.

Sticky bucketing: ``bucket = int.from_bytes(sha256(f"{salt}:{user_id}")[:8], "big") / 2**64 * 100``
and a user is in a ``percent: P`` experiment when ``bucket < P``. It depends on nothing
but the salt and the user id, so any process, restart or offline job recomputes the same
assignment; raising P only adds users (those already in stay in).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from proxy.routes import Experiment, Route

DEFAULT_ARM = "default"


@dataclass(frozen=True)
class Arm:
    name: str
    model: str  # a model name from the registry, or "none" (control: origin order)


def bucket(salt: str, user_id: str) -> float:
    """A user's sticky position in [0, 100) for a salt."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100.0


@dataclass(frozen=True)
class RequestView:
    """The parts of a request that conditions read (a plain view: easy to test)."""

    headers: Mapping[str, str]
    cookies: Mapping[str, str]
    query: Mapping[str, str]


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


@dataclass(frozen=True)
class ArmChooser:
    default: Arm
    experiments: tuple[CompiledExperiment, ...]

    @classmethod
    def for_route(cls, route: Route) -> ArmChooser:
        compiled = []
        for index, exp in enumerate(route.experiments):
            name = exp.name or f"exp{index}"
            # Default salt: the route and arm names, so two routes never share buckets
            # by accident and a percent change keeps the users already in.
            salt = exp.when.salt if exp.when.salt is not None else f"{route.name}:{name}"
            compiled.append(CompiledExperiment(Arm(name, exp.model), exp, salt))
        return cls(Arm(DEFAULT_ARM, route.model), tuple(compiled))

    def choose(self, view: RequestView, user_id: str | None) -> Arm:
        for exp in self.experiments:
            if exp.matches(view, user_id):
                return exp.arm
        return self.default

    def vary_headers(self) -> list[str]:
        """Request headers whose values can change the arm (for the Vary header)."""
        names: list[str] = []
        for exp in self.experiments:
            names.extend((exp.spec.when.header or {}).keys())
            if exp.spec.when.cookie:
                names.append("Cookie")
        return names
