"""The dynamic configuration (``routes.yaml``): model registry and feed routes.

Validated as a whole; any problem names its YAML path and the file is refused.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from plugins.builtin.dotted import check_dotted
from plugins.builtin.sources import check_source
from plugins.spec import PluginSpec
from proxy.config.bandit import Bandit
from proxy.config.guardrails import Guardrails
from proxy.config.yamlload import Strict

NONE_MODEL = "none"  # the control arm: origin order
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"


class ModelRef(Strict):
    path: str
    sha256: str | None = None

    @field_validator("sha256", mode="before")
    @classmethod
    def _quoted(cls, value: Any) -> Any:
        # An unquoted digest of digits only is a YAML number, its leading zeros lost.
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError("must be a quoted string (YAML read a number)")
        return value

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raise ValueError("must be 64 hex digits (the output of `rankgate model sha256 FILE`)")
        return value.lower() if value else value


class Match(Strict):
    path: str | None = None  # exact, or with {name} segments: /u/{id}/feed
    prefix: str | None = None
    methods: tuple[str, ...] = ("GET",)

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must list at least one method")
        return tuple(m.upper() for m in value)

    @model_validator(mode="after")
    def _one(self) -> Match:
        if (self.path is None) == (self.prefix is None):
            raise ValueError("give exactly one of 'path' or 'prefix'")
        for value in (self.path, self.prefix):
            if value is not None and not value.startswith("/"):
                raise ValueError(f"must start with '/': {value!r}")
        return self


def _as_text(value: Any) -> Any:
    # YAML reads `true` and `1` as bool and int; requests carry text. `X-Beta: true` in
    # the file means the header value "true", not Python's "True".
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return value


class When(Strict):
    header: dict[str, str] | None = None
    cookie: dict[str, str] | None = None
    query: dict[str, str] | None = None
    percent: Annotated[float, Field(ge=0, le=100)] | None = None
    salt: str | None = None

    @field_validator("header", "cookie", "query", mode="before")
    @classmethod
    def _values(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: _as_text(v) for k, v in value.items()}
        return value

    @field_validator("salt", mode="before")
    @classmethod
    def _salt(cls, value: Any) -> Any:
        return _as_text(value)

    @field_validator("percent", mode="before")
    @classmethod
    def _percent(cls, value: Any) -> Any:
        if isinstance(value, bool) or (isinstance(value, int | float) and not 0 <= value <= 100):
            raise ValueError("must be 0..100")
        return value

    @model_validator(mode="after")
    def _any(self) -> When:
        if not (self.header or self.cookie or self.query or self.percent is not None):
            raise ValueError("needs at least one of header, cookie, query, percent")
        if self.salt is not None and self.percent is None:
            raise ValueError("salt goes with percent")
        return self


class Shadow(Strict):
    """A model that scores the same inputs after the response, to compare its order with
    the one served (proxy/experiments/shadow.py); it never changes a response."""

    model: str
    sample: Annotated[float, Field(gt=0, le=1)] = 0.1  # share of re-ranked requests
    top: Annotated[int, Field(ge=1, le=1000)] = 20  # the shadow's top N in the record


MAX_INTERLEAVED = 6  # models in one interleaved list (why: Experiment.interleave)


class Experiment(Strict):
    name: Annotated[str, Field(pattern=_NAME)] | None = None
    when: When
    model: str | None = None
    # Two to six models whose lists are team-draft interleaved (multileaved with more than
    # two; proxy/feed/interleave.py), in place of one model. Six at most: every model is a
    # full run on the request path, and a page of 20 gives each of k teams 20/k slots, too
    # few at k > 6 for a click to say much (and one letter per team, A to F).
    interleave: tuple[str, ...] | None = None
    shadow: Shadow | None = None
    guardrails: Guardrails | None = None  # this arm's, else the route's
    # Several models, weighted by how well each does (in place of one model).
    bandit: Bandit | None = None

    @model_validator(mode="after")
    def _one_ranking(self) -> Experiment:
        given = [k for k in ("model", "interleave", "bandit") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'model', 'interleave' or 'bandit'")
        if self.interleave is not None:
            models = self.interleave
            if not 2 <= len(models) <= MAX_INTERLEAVED:
                raise ValueError(f"interleave: 2 to {MAX_INTERLEAVED} models, not {len(models)}")
            if len(set(models)) != len(models) or NONE_MODEL in models:
                if len(models) == 2:
                    raise ValueError("interleave: two different models (not 'none')")
                raise ValueError(f"interleave: {len(models)} different models (not 'none')")
        return self

    @property
    def models(self) -> tuple[str, ...]:
        """The model (or the interleaved models) this arm ranks with; a bandit's
        first model until its weights pick one per user."""
        if self.bandit is not None:
            return (self.bandit.models[0],)
        return self.interleave if self.interleave is not None else (self.model or NONE_MODEL,)

    @property
    def label(self) -> str:
        """What X-Rerank, metrics and records call the arm's model: ``A+B`` (``A+B+C``...)
        interleaved."""
        return "+".join(self.models)


DEFAULT_ARM = "default"  # the arm name of a route's own `model:`


def arm_name(index: int, experiment: Experiment) -> str:
    """The arm an experiment reports (X-Rerank, metrics, logs): its name, else expN."""
    return experiment.name or f"exp{index}"


class Route(Strict):
    name: Annotated[str, Field(pattern=_NAME)]
    match: Match
    items: str = "items"
    item_id: str = "id"
    user: tuple[str, ...] = ("cookie:uid", "header:X-User-Id")
    budget_ms: Annotated[float, Field(gt=0, le=60_000)] = 25.0
    model: str
    experiments: tuple[Experiment, ...] = ()
    plugins: tuple[PluginSpec, ...] = ()
    shadow: Shadow | None = None  # for every arm that has none of its own
    guardrails: Guardrails | None = None  # for every experiment arm without its own
    # The path (and query) `rankgate check` fetches from the origin to probe this route;
    # None: the match path, when it is exact.
    sample: str | None = None

    @field_validator("sample")
    @classmethod
    def _sample(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"must start with '/': {value!r}")
        return value

    @property
    def sample_path(self) -> str | None:
        """What to fetch to probe the route: ``sample``, else an exact match path."""
        if self.sample is not None:
            return self.sample
        path = self.match.path
        return path if path is not None and "{" not in path else None

    # user: and items:/item_id: compile into the built-in sources and dotted plugins.
    @field_validator("user")
    @classmethod
    def _sources(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("list at least one source (e.g. cookie:uid)")
        for source in value:
            check_source(source)
        return value

    @field_validator("items", "item_id")
    @classmethod
    def _dotted(cls, value: str) -> str:
        return check_dotted(value)


class RoutesFile(Strict):
    models: dict[Annotated[str, Field(pattern=_NAME)], ModelRef] = {}
    routes: tuple[Route, ...] = ()

    @model_validator(mode="after")
    def _references(self) -> RoutesFile:
        if NONE_MODEL in self.models:
            raise ValueError(f"models.{NONE_MODEL}: reserved for the control arm")
        known = sorted(self.models)
        seen: set[str] = set()
        problems = []
        for i, route in enumerate(self.routes):
            if route.name in seen:
                problems.append(f"routes[{i}].name: duplicate route name {route.name!r}")
            seen.add(route.name)
            # Arm names label metrics and, by default, salt the buckets: two arms with
            # one name would mix their numbers and share their users.
            arms = {DEFAULT_ARM}
            for j, experiment in enumerate(route.experiments):
                arm = arm_name(j, experiment)
                if arm in arms:
                    reserved = " (reserved for the route's model)" if arm == DEFAULT_ARM else ""
                    problems.append(
                        f"routes[{i}].experiments[{j}].name: arm name {arm!r} is already used "
                        f"in this route{reserved}"
                    )
                arms.add(arm)
            for where, ref in _model_refs(route, f"routes[{i}]"):
                if ref != NONE_MODEL and ref not in self.models:
                    problems.append(f"{where}: unknown model {ref!r} (known: {known or 'none'})")
        if problems:
            # One ValueError per file keeps pydantic from nesting locations; each line
            # already carries its full YAML path.
            raise ValueError("\n".join(problems))
        return self


def _model_refs(route: Route, where: str) -> list[tuple[str, str]]:
    """Every model a route names, with its YAML path."""
    refs = [(f"{where}.model", route.model)]
    if route.shadow is not None:
        refs.append((f"{where}.shadow.model", route.shadow.model))
    for j, e in enumerate(route.experiments):
        at = f"{where}.experiments[{j}]"
        if e.interleave is not None:
            refs += [(f"{at}.interleave[{k}]", m) for k, m in enumerate(e.interleave)]
        elif e.bandit is not None:
            refs += [(f"{at}.bandit.models[{k}]", m) for k, m in enumerate(e.bandit.models)]
        else:
            refs.append((f"{at}.model", e.models[0]))
        if e.shadow is not None:
            refs.append((f"{at}.shadow.model", e.shadow.model))
    return refs
