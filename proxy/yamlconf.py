"""Load a YAML file into a pydantic model, with errors that name the YAML path.

Both config files go through here, so a person always reads the same kind of message:
``routes[0].experiments[2].percent: must be 0..100``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

# libyaml when PyYAML has it: the same documents, ~7x faster. A reload parses on a
# worker thread, and the pure-Python parser holds the GIL (and so stalls the event loop)
# for the whole parse, ~5 ms for the example routes.yaml.
SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ConfigError(Exception):
    """A config file that cannot be used; ``problems`` are ``path: message`` lines."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
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


def _message(err: Any) -> str:
    msg = str(err["msg"])
    # pydantic prefixes custom ValueErrors; the user wants our words only.
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required"
    return msg


def validation_problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        # Drop union/tag noise pydantic adds to locations (e.g. 'function-after[...]').
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        message = _message(err)
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
        raise ConfigError(source, validation_problems(exc)) from None


def load(model: type[M], path: Path, context: dict[str, Any] | None = None) -> M:
    return validate(model, read_yaml(path), str(path), context)
