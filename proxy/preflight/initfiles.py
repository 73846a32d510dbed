"""The files ``rankgate init`` writes: ``rankgate.yaml`` and ``routes.yaml``, commented,
rendered from what proxy/preflight/initprobe.py found, and loaded back through the same models
``rankgate serve`` uses before anything is written.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from urllib.parse import urlsplit

from proxy.preflight.initprobe import Found, InitError, ModelChoice, safe_name


def _q(value: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is valid YAML)."""
    return json.dumps(value)


def _block(lines: list[tuple[str, str]]) -> str:
    """YAML lines with their comments lined up in one column."""
    width = max(len(text) for text, note in lines if note)
    out = []
    for text, note in lines:
        out.append(f"{text:<{width}}  # {note}" if note else text)
    return "\n".join(out) + "\n"


def render_config(
    origin: str, listen: tuple[str, int], admin: tuple[str, int], model: ModelChoice
) -> str:
    today = datetime.date.today().isoformat()
    head = f"""\
# rankgate.yaml, written by `rankgate init` on {today}. Read at start: a change needs
# a restart. Every key left out has a default (docs/reference/configuration.md); relative paths
# resolve against this file's directory.
"""
    return head + _block(
        [
            (f"listen: {{host: {listen[0]}, port: {listen[1]}}}", "where clients connect"),
            (f"admin: {{host: {admin[0]}, port: {admin[1]}}}", "/metrics, /readyz: private"),
            ("origin:", ""),
            (f"  url: {_q(origin)}", "your origin: every request goes there"),
            ("redis:", ""),
            ("  # No url: an embedded Valkey keeps the vectors in .rankgate/valkey/ beside", ""),
            ("  # this file, on the same port at every start (`rankgate serve` prints it),", ""),
            ("  # shared by `rankgate serve` and `rankgate embeddings load`. In production,", ""),
            ('  # a Redis of your own instead: url: "redis://HOST:6379/0"', ""),
            ("  embedded: {dir: .rankgate/valkey}", ""),
            ("embeddings:", ""),
            (f"  dim: {model.dim}", "the model's input: float32 values per vector"),
            ('  user_key: "emb:user:{id}"', "the keys `rankgate embeddings load` writes"),
            ('  item_key: "emb:item:{id}"', ""),
            ("logging: {level: info, format: text}", "format: json for a log shipper"),
            ("routes: routes.yaml", "watched: edits apply without a restart"),
            ("workers: 1", "processes sharing the port; 0 = one per CPU"),
        ]
    )


def render_routes(
    feed_path: str, found: Found, model: ModelChoice, user: list[str], routes_dir: Path
) -> str:
    match = urlsplit(feed_path).path or "/"
    name = safe_name(match.rstrip("/").rsplit("/", 1)[-1], "feed")
    if model.reference:
        path = model.target.name
        what = "the reference model shipped with rankgate (trained on MovieLens), copied here"
    else:
        path = model.path_from(routes_dir)
        what = f"{model.source.name}, as given to `rankgate init`"
    head = f"""\
# routes.yaml, written by `rankgate init`: watched, and reloaded without a restart.
models:
  # {what};
  # sha256 pins the reviewed file: a different file at that path is refused.
  {model.name}:
    path: {_q(path)}
    sha256: {_q(model.sha256)}
routes:
"""
    return head + _block(
        [
            (f"  - name: {name}", ""),
            (f"    match: {{path: {_q(match)}, methods: [GET]}}", "exact; or {prefix: /api/}"),
            (f"    sample: {_q(feed_path)}", "what `rankgate check` probes; fetched at start too"),
            (f"    items: {_q(found.items)}", "dotted path to the item array in the body"),
            (f"    item_id: {_q(found.item_id)}", "dotted path to the id in one item"),
            (f"    user: [{', '.join(user)}]", "where the user id is: first one present wins"),
            ("    budget_ms: 25", "past it, the origin's order is served"),
            (f"    model: {model.name}", "the model that ranks this feed"),
        ]
    )


def validate_files(config_text: str, routes_text: str, out_dir: Path) -> None:
    """What init writes must load: a flag that makes a bad file fails here, not later."""
    from proxy.config.routes import RoutesFile
    from proxy.config.settings import Settings
    from proxy.config.yamlload import ConfigError, parse_yaml, validate

    try:
        config = parse_yaml(config_text, "rankgate.yaml")
        validate(Settings, {**config, "base_dir": out_dir}, "rankgate.yaml")
        validate(RoutesFile, parse_yaml(routes_text, "routes.yaml"), "routes.yaml")
    except ConfigError as exc:
        raise InitError("; ".join(f"{exc.source}: {p}" for p in exc.problems)) from None
