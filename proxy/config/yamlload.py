"""Load a YAML file into a pydantic model, with errors that name the YAML path.

Both config files go through here, so a person always reads the same kind of message:
``routes[0].experiments[2].percent: must be 0..100``.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class Strict(BaseModel):
    """The base of every config model: unknown keys are errors (with a did-you-mean),
    and a loaded config is frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# An environment variable's name (where a key or token is read from).
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


def check_redis_url(value: str | None) -> str | None:
    """A field validator's body: None, or a redis://, rediss:// or unix:// URL."""
    if value is not None and urlsplit(value).scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"not a Redis URL: {value!r} (want redis://host:port/db)")
    return value


M = TypeVar("M", bound=BaseModel)

# libyaml when PyYAML has it: the same documents, ~7x faster. A reload parses on a
# worker thread, and the pure-Python parser holds the GIL (and so stalls the event loop)
# for the whole parse, ~5 ms for the example routes.yaml.
SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ConfigError(Exception):
    """A config file that cannot be used; ``problems`` are ``path: message`` lines."""

    def __init__(self, source: str, problems: list[str], reason: str = "invalid") -> None:
        self.source = source
        self.problems = problems
        self.reason = reason  # a metric label: invalid | limit | signature | sha256
        super().__init__(f"{source}: " + "; ".join(problems))

    def render(self) -> str:
        return "\n".join(f"{self.source}: {p}" for p in self.problems)


def yaml_path(loc: tuple[int | str, ...]) -> str:
    """('routes', 0, 'experiments', 2, 'percent') -> 'routes[0].experiments[2].percent'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


# Filled in by the loader, never written in a file: not a key to suggest.
HIDDEN_KEYS = frozenset({"base_dir"})


def _candidates(annotation: Any) -> list[Any]:
    """The types an annotation may hold: Optional/Union members, Annotated's type."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _candidates(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [c for a in typing.get_args(annotation) for c in _candidates(a)]
    return [] if annotation is type(None) else [annotation]


def _step(annotation: Any, part: int | str) -> Any:
    """The annotation one location part further in: a model's field, a container's item."""
    for candidate in _candidates(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            if isinstance(part, str) and part in candidate.model_fields:
                return candidate.model_fields[part].annotation
            continue
        origin, args = typing.get_origin(candidate), typing.get_args(candidate)
        if origin in (tuple, list, set, frozenset) and args:
            return args[0]
        if origin is dict and len(args) == 2:
            return args[1]
    return None


def allowed_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys the mapping at ``loc`` may hold (its model's fields); [] when unknown."""
    annotation: Any = model
    for part in loc:
        annotation = _step(annotation, part)
        if annotation is None:
            return []
    for candidate in _candidates(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return [k for k in candidate.model_fields if k not in HIDDEN_KEYS]
    return []


def did_you_mean(key: str, allowed: list[str]) -> str:
    """`` (did you mean 'port'?)`` for a near miss, else ``""``."""
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _message(err: Any, model: type[BaseModel] | None = None) -> str:
    msg = str(err["msg"])
    # pydantic prefixes custom ValueErrors; the user wants our words only.
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
        loc = err["loc"]
        if model is not None and loc and isinstance(loc[-1], str):
            msg += did_you_mean(loc[-1], allowed_keys(model, loc[:-1]))
    elif err["type"] == "missing":
        msg = "required"
    return msg


def validation_problems(exc: ValidationError, model: type[BaseModel] | None = None) -> list[str]:
    problems = []
    for err in exc.errors():
        # Drop union/tag noise pydantic adds to locations (e.g. 'function-after[...]').
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        message = _message({**err, "loc": loc}, model)
        if "\n" in message or (not loc and ": " in message):
            # A whole-file check already wrote the full YAML path into each line.
            problems.extend(line for line in message.splitlines() if line)
        else:
            problems.append(f"{yaml_path(loc)}: {message}")
    return problems


def read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror}"]) from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str | bytes, source: str) -> Any:
    try:
        return yaml.load(text, Loader=SAFE_LOADER)  # a safe loader (no Python objects)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [f"YAML syntax error: {where}{problem}"]) from None


def validate(model: type[M], data: Any, source: str, context: dict[str, Any] | None = None) -> M:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): must be a mapping"])
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(source, validation_problems(exc, model)) from None


def load(model: type[M], path: Path, context: dict[str, Any] | None = None) -> M:
    return validate(model, read_yaml(path), str(path), context)
