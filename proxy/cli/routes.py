"""``rankgate routes push|status``: one routes switch for a fleet (routes_source: redis).

``push`` validates the file as a reload would (YAML, schema, plugins, every model: its
file, sha256 pin and contract, with relative paths resolved where the serving processes
resolve them: the directory of the config's ``routes:`` file), then stores it under one
key with its sha256, the next version and its signature (HMAC-SHA256 under the fleet key
in ``routes_redis.key_env``, proxy/routing/signing.py), and publishes that version. ``status`` lists
the stored version and every live process with the version it serves.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import redis

from proxy.cli.options import add_config, config_path
from proxy.config.settings import Settings, load_settings
from proxy.config.yamlload import ConfigError
from proxy.routing import signing, versions
from proxy.routing.versions import Head, validate

CLIENT_TIMEOUT_S = 5.0


def _client(settings: Settings) -> redis.Redis:
    from proxy.store.connect import sync_client

    assert settings.redis.url is not None
    return sync_client(settings.redis.url, settings.redis.cluster, CLIENT_TIMEOUT_S)


def _settings(given: str | None) -> Settings:
    path = config_path(given, "routes")
    settings = load_settings(path)
    if settings.redis.url is None:
        raise ConfigError(path, ["redis.url: required to keep routes in Redis"])
    return settings


def cmd_push(args: argparse.Namespace) -> int:
    args.config = config_path(args.config, "routes push")
    settings = _settings(args.config)
    file = Path(args.file)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        print(f"rankgate: {file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        print(f"ok    {validate(settings, file, raw)}")
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        print(f"rankgate: {file} refused: nothing pushed", file=sys.stderr)
        return 1
    if settings.routes_source != "redis":
        print(
            f"note  {args.config} has routes_source: {settings.routes_source}; processes "
            "follow Redis only with routes_source: redis"
        )
    cfg = settings.routes_redis
    try:
        key = signing.key_from_env(cfg.key_env)
    except signing.RoutesKeyError as exc:
        print(f"rankgate: {exc}; nothing pushed", file=sys.stderr)
        return 1
    try:
        client = _client(settings)
        head, changed = versions.push(client, cfg, raw, key, force=args.force)
    except redis.RedisError as exc:
        print(f"rankgate: Redis at {settings.redis.url}: {exc}", file=sys.stderr)
        return 1
    if changed:
        print(
            f"pushed version {head.version} (sha256 {head.sha256[:12]}) to key {cfg.key}; "
            f"published on {cfg.channel}"
        )
    else:
        print(
            f"unchanged: version {head.version} already has sha256 {head.sha256[:12]} "
            "(--force pushes it again as a new version)"
        )
    if args.wait is None:
        return 0
    return _wait(client, settings, args.wait, as_json=False)


def cmd_status(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    try:
        client = _client(settings)
        if args.wait is not None:
            return _wait(client, settings, args.wait, as_json=args.json)
        stored = versions.fetch(client, settings.routes_redis, max_bytes=0)
        fleet = versions.fleet(client, settings.routes_redis)
    except redis.RedisError as exc:
        print(f"rankgate: Redis at {settings.redis.url}: {exc}", file=sys.stderr)
        return 1
    head = None if stored is None else stored.head
    if args.json:
        print(orjson.dumps(_json(stored, fleet, settings), option=orjson.OPT_INDENT_2).decode())
    else:
        print(_render(stored, fleet, settings))
    return 0 if converged(head, fleet) else 1


def converged(head: Head | None, fleet: list[dict[str, Any]]) -> bool:
    """Every live process serves the stored version (vacuously true with none)."""
    if head is None:
        return True
    return all(e.get("version") == head.version for e in fleet)


def _wait(client: redis.Redis, settings: Settings, limit_s: float, as_json: bool) -> int:
    """Poll until the fleet serves the stored version; 1 if a process refused it or
    the time ran out (the table says which)."""
    cfg = settings.routes_redis
    deadline = time.monotonic() + limit_s
    while True:
        stored = versions.fetch(client, cfg, max_bytes=0)
        fleet = versions.fleet(client, cfg)
        head = None if stored is None else stored.head
        done = converged(head, fleet)
        refused = head is not None and any(
            (e.get("refused") or {}).get("version") == head.version for e in fleet
        )
        if done or refused or time.monotonic() >= deadline:
            if as_json:
                out = _json(stored, fleet, settings)
                print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
            else:
                print(_render(stored, fleet, settings))
            return 0 if done else 1
        time.sleep(0.1)


def signature_state(stored: versions.StoredRoutes, settings: Settings) -> str:
    """What the fleet will make of the stored version's signature, as far as this
    command can tell (with the key in its environment)."""
    cfg = settings.routes_redis
    try:
        key = signing.key_from_env(cfg.key_env)
    except signing.RoutesKeyError:
        if not stored.signature:
            return "UNSIGNED: every process refuses it"
        return f"signature not checked ({cfg.key_env} not set here)"
    problem = stored.signature_problem(key, cfg.key)
    return "signature ok" if problem is None else f"REFUSED: {problem.split(':')[0]}"


def _json(
    stored: versions.StoredRoutes | None, fleet: list[dict[str, Any]], settings: Settings
) -> dict[str, Any]:
    return {
        "stored": None
        if stored is None
        else {
            "version": stored.head.version,
            "sha256": stored.head.sha256,
            "pushed_at": stored.pushed_at,
            "pushed_by": stored.pushed_by,
            "signature": signature_state(stored, settings),
        },
        "processes": fleet,
        "converged": converged(None if stored is None else stored.head, fleet),
    }


def _state(entry: dict[str, Any], head: Head | None) -> str:
    refused = entry.get("refused")
    if refused:
        first = str(refused.get("error", "")).splitlines()[0] if refused.get("error") else ""
        return f"refused {refused.get('version')}: {first}"
    if entry.get("version") is None:
        return (
            "no version (serving the routes file)"
            if entry.get("source") == "file"
            else ("no routes")
        )
    if head is not None and entry.get("version") == head.version:
        return "current"
    return "behind"


def _printable(text: str) -> str:
    """Stored text as one safe line (anyone who can write Redis can write it)."""
    return "".join(c if c.isprintable() else "?" for c in text)[:120]


def _render(
    stored: versions.StoredRoutes | None, fleet: list[dict[str, Any]], settings: Settings
) -> str:
    lines = []
    head = None if stored is None else stored.head
    if stored is None:
        lines.append("stored   no routes pushed yet")
    else:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stored.pushed_at))
        lines.append(
            f"stored   version {stored.head.version}  sha256 {stored.head.sha256[:12]}  "
            f"pushed {when} by {_printable(stored.pushed_by)}  {signature_state(stored, settings)}"
        )
    if not fleet:
        lines.append("no live process reports (none running with routes_source: redis?)")
        return "\n".join(lines)
    width = max(len("PROCESS"), *(len(e["process"]) for e in fleet))
    lines.append(f"{'PROCESS':<{width}}  VERSION  SHA256        SUB  SEEN    STATE")
    for e in fleet:
        version = "-" if e.get("version") is None else str(e["version"])
        sha = (e.get("sha256") or "-")[:12]
        sub = "yes" if e.get("subscribed") else "no"
        seen = f"{e.get('age_s', 0):.1f}s"
        lines.append(
            f"{e['process']:<{width}}  {version:<7}  {sha:<12}  {sub:<3}  {seen:<6}  "
            f"{_state(e, head)}"
        )
    current = sum(1 for e in fleet if head is not None and e.get("version") == head.version)
    lines.append(f"{len(fleet)} process(es), {current} on the stored version")
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("routes", help="routes kept in Redis for a fleet")
    cmds = parser.add_subparsers(dest="routes_command", required=True, metavar="ACTION")
    push = cmds.add_parser("push", help="validate routes.yaml, store it as the next version")
    push.add_argument("file", help="the routes file to push")
    add_config(push)
    push.add_argument("--force", action="store_true", help="a new version even if unchanged")
    push.add_argument(
        "--wait", type=float, metavar="S", help="then wait up to S seconds for the fleet"
    )
    push.set_defaults(func=cmd_push)
    status = cmds.add_parser("status", help="the stored version and what each process serves")
    add_config(status)
    status.add_argument("--json", action="store_true", help="machine-readable")
    status.add_argument(
        "--wait", type=float, metavar="S", help="wait up to S seconds for every process"
    )
    status.set_defaults(func=cmd_status)
