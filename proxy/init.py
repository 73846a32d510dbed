"""``rankgate init``: from an origin's feed to a config that ``rankgate check`` passes.

It fetches one response of the feed, finds the item array and the item id field in it
(``proxy.feedshape``), and writes a commented ``rankgate.yaml`` and ``routes.yaml``:
the origin, an embedded Valkey (no Redis to install), one route for the feed, and a
model (by default the reference model shipped with rankgate, copied beside the config
with its sha256 pinned). Nothing is asked: when the body leaves a choice open (two arrays
of objects, two id-like fields), it lists the candidates and names the flag that picks
one. It never overwrites a file without ``--force``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.resources
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from models.contract import ModelContractError, sha256_file
from proxy.feedshape import ArrayCandidate, choose_id, find_arrays, find_ids, items_at
from proxy.sample import SampleError, fetch, join

DEFAULT_USER = ("cookie:uid", "header:X-User-Id")
REFERENCE_MODEL = "ranker_v1.onnx"  # in the `models` package (package data)


class InitError(Exception):
    """Why init wrote nothing: one line, or a line and the candidates to pick from."""


@dataclass(frozen=True)
class Found:
    items: str
    item_id: str
    count: int  # items in the sample
    with_id: int  # of which have an id


@dataclass(frozen=True)
class ModelChoice:
    name: str
    source: Path  # the file as given (or shipped)
    target: Path  # where routes.yaml points (the copy, for the reference model)
    dim: int
    sha256: str
    reference: bool

    def path_from(self, directory: Path) -> str:
        """The model's path as routes.yaml in ``directory`` names it: relative when the
        model is in that directory's tree, else absolute."""
        relative = os.path.relpath(self.target, directory)
        return self.target.as_posix() if relative.startswith("..") else relative


def reference_model() -> Path:
    """The reference model, wherever rankgate is installed (a checkout or a wheel)."""
    resource = importlib.resources.files("models") / REFERENCE_MODEL
    with importlib.resources.as_file(resource) as path:
        return Path(path)


# -- finding the items --------------------------------------------------------------------


def _pick_list(what: str, flag: str, rows: list[tuple[str, str]]) -> str:
    width = max(len(p) for p, _ in rows)
    lines = [f"  {flag} {p:<{width}}   {d}" for p, d in rows]
    return f"{what}; pick one with {flag} PATH:\n" + "\n".join(lines)


def _arrays_hint(arrays: list[ArrayCandidate]) -> str:
    if not arrays:
        return "no array of objects in the body"
    shown = ", ".join(f"{a.shown} ({a.objects})" for a in arrays[:5])
    return f"arrays of objects in the body: {shown}"


def find_feed(doc: object, items: str | None, item_id: str | None) -> Found:
    arrays = find_arrays(doc)
    if items is None:
        if not arrays:
            raise InitError(
                "no array of objects in the body: rankgate re-orders an array of objects, "
                "each with an id (an empty feed? give --items PATH --item-id PATH)"
            )
        if len(arrays) > 1:
            raise InitError(
                _pick_list(
                    f"{len(arrays)} arrays of objects in the body",
                    "--items",
                    [(a.shown, f"{a.objects} objects") for a in arrays],
                )
            )
        items = arrays[0].path
    found = items_at(doc, items)
    shown_items = items or '""'
    if found is None:
        raise InitError(f"--items {shown_items}: no array there ({_arrays_hint(arrays)})")
    candidates = find_ids(found)
    if item_id is None:
        if not found:
            raise InitError(
                f"the array at {shown_items} is empty: no id field to find (give --item-id PATH)"
            )
        chosen, shown = choose_id(candidates)
        if chosen is None:
            rows = [(c.path, c.describe()) for c in shown]
            where = f"the {len(found)} items at {items or '(the body)'}"
            if not rows:
                raise InitError(f"no field with a string or integer value in {where}")
            if any(c.id_like for c in shown):
                what = f"{len(shown)} id-like fields in {where}"
            else:
                what = f"no id-like field (a name ending in 'id') in {where}"
            raise InitError(_pick_list(what, "--item-id", rows))
        item_id = chosen.path
    ids = [c for c in candidates if c.path == item_id]
    with_id = ids[0].present if ids else 0
    if found and with_id == 0:
        rows = [(c.path, c.describe()) for c in candidates[:6]]
        raise InitError(
            f"--item-id {item_id}: none of the {len(found)} items has a string or integer "
            "there" + ("" if not rows else "\n" + _pick_list("fields", "--item-id", rows))
        )
    return Found(items, item_id, len(found), with_id)


# -- the model ----------------------------------------------------------------------------


def _name(text: str, default: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "-", text).strip("-.")
    return name if name and name[0].isalnum() else default


def choose_model(given: str | None, dim: int | None, out_dir: Path) -> ModelChoice:
    from models.contract import check_signature, open_session

    reference = given is None
    source = reference_model() if given is None else Path(given)
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise InitError(f"--model {source}: cannot read: {exc.strerror}") from None
    try:
        signature = check_signature(open_session(data), dim, dim_from="--dim")
    except ModelContractError as exc:
        raise InitError(f"--model {source}: {exc}") from None
    except Exception as exc:  # onnxruntime's own errors for a file that is no model
        raise InitError(f"--model {source}: not an ONNX model ({type(exc).__name__})") from None
    model_dim = signature.dim or dim
    if model_dim is None:
        raise InitError(
            f"--model {source}: the model leaves the embedding dimension open; give --dim D"
        )
    # The reference model is copied beside the config: the directory is then whole.
    target = out_dir / source.name if reference else source.resolve()
    return ModelChoice(
        name=_name(source.stem, "model"),
        source=source,
        target=target,
        dim=model_dim,
        sha256=sha256_file(source),
        reference=reference,
    )


# -- the files ----------------------------------------------------------------------------


def _q(value: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is valid YAML)."""
    return json.dumps(value)


def _host_port(value: str, default_host: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return (host or default_host), int(port)


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
# a restart. Every key left out has a default (README, "Configuration"); relative paths
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
    name = _name(match.rstrip("/").rsplit("/", 1)[-1], "feed")
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
            (f"    sample: {_q(feed_path)}", "what `rankgate check` fetches to probe it"),
            (f"    items: {_q(found.items)}", "dotted path to the item array in the body"),
            (f"    item_id: {_q(found.item_id)}", "dotted path to the id in one item"),
            (f"    user: [{', '.join(user)}]", "where the user id is: first one present wins"),
            ("    budget_ms: 25", "past it, the origin's order is served"),
            (f"    model: {model.name}", "the model that ranks this feed"),
        ]
    )


def run_init(args: argparse.Namespace) -> int:
    def say(line: str) -> None:
        print(line, flush=True)

    out_dir = Path(args.dir)
    origin = args.origin.rstrip("/")
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InitError(f"--origin {args.origin}: not a URL (want http://host:port)")
    if not args.feed.startswith("/"):
        raise InitError(f"--feed {args.feed}: a path on the origin, starting with '/'")
    files = [out_dir / "rankgate.yaml", out_dir / "routes.yaml"]
    model = choose_model(args.model, args.dim, out_dir.resolve())
    if model.reference:
        files.append(out_dir / model.target.name)
    existing = [f for f in files if f.exists()]
    if existing and not args.force:
        names = ", ".join(str(f) for f in existing)
        raise InitError(f"{names}: already there (--force overwrites)")

    url = join(origin, args.feed)
    try:
        sample = fetch(url)
    except SampleError as exc:
        raise InitError(str(exc)) from None
    say(f"GET {url}: {sample.describe()}")
    found = find_feed(sample.doc, args.items, args.item_id)
    say(f"items   {found.items or '(the body)'}: {found.count} objects")
    say(f"ids     {found.item_id}: {found.with_id} of {found.count} items")
    if model.reference:
        say(f"model   {model.name}: the reference model shipped with rankgate, dim {model.dim}")
    else:
        say(f"model   {model.name}: {model.source}, dim {model.dim}")

    user = list(args.user or DEFAULT_USER)
    try:
        listen = _host_port(args.listen, "127.0.0.1")
        admin = _host_port(args.admin, "127.0.0.1")
    except ValueError:
        raise InitError("--listen/--admin: want HOST:PORT or PORT") from None
    config_text = render_config(origin, listen, admin, model)
    routes_text = render_routes(args.feed, found, model, user, out_dir.resolve())
    _validate(config_text, routes_text, out_dir)

    out_dir.mkdir(parents=True, exist_ok=True)
    if model.reference and model.source.resolve() != model.target.resolve():
        shutil.copyfile(model.source, model.target)
    files[0].write_text(config_text)
    files[1].write_text(routes_text)
    say("wrote   " + ", ".join(str(f) for f in files))
    config = files[0]
    say("next    rankgate embeddings load VECTORS.npz --config " + str(config))
    say("        rankgate check --config " + str(config))
    say("        rankgate serve --config " + str(config))
    return 0


def _validate(config_text: str, routes_text: str, out_dir: Path) -> None:
    """What init writes must load: a flag that makes a bad file fails here, not later."""
    from proxy.config import Settings
    from proxy.routes import RoutesFile
    from proxy.yamlconf import ConfigError, parse_yaml, validate

    try:
        config = parse_yaml(config_text, "rankgate.yaml")
        validate(Settings, {**config, "base_dir": out_dir}, "rankgate.yaml")
        validate(RoutesFile, parse_yaml(routes_text, "routes.yaml"), "routes.yaml")
    except ConfigError as exc:
        raise InitError("; ".join(f"{exc.source}: {p}" for p in exc.problems)) from None


def cmd_init(args: argparse.Namespace) -> int:
    try:
        return run_init(args)
    except InitError as exc:
        print(f"rankgate init: {exc}", file=sys.stderr)
        return 1


def _listen_arg(value: str) -> str:
    if value.isdigit():
        return f"127.0.0.1:{value}"
    return value


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "init",
        help="write rankgate.yaml and routes.yaml for your origin's feed",
        description="Fetch one response of the feed, find the item array and the item id "
        "field, and write a commented rankgate.yaml + routes.yaml that `rankgate check` "
        "passes. When the body leaves a choice open, the candidates are listed and the "
        "flag that picks one is named.",
    )
    parser.add_argument("--origin", required=True, metavar="URL", help="your origin")
    parser.add_argument(
        "--feed", required=True, metavar="PATH", help="the feed's path on the origin (/api/feed)"
    )
    parser.add_argument(
        "--user",
        action="append",
        metavar="SOURCE",
        help="where the user id is: cookie:NAME, header:NAME or query:NAME; repeat for "
        "more (default: cookie:uid and header:X-User-Id)",
    )
    parser.add_argument(
        "--model",
        metavar="FILE",
        help="an ONNX ranker (default: the reference model shipped with rankgate, dim 32)",
    )
    parser.add_argument("--dim", type=int, help="embedding dimension, if the model leaves it open")
    parser.add_argument("--dir", default=".", help="where to write the files (default: .)")
    parser.add_argument("--items", metavar="PATH", help="dotted path to the item array")
    parser.add_argument("--item-id", metavar="PATH", help="dotted path to the id in one item")
    parser.add_argument(
        "--listen",
        type=_listen_arg,
        default="127.0.0.1:8080",
        metavar="[HOST:]PORT",
        help="where rankgate listens (default: 127.0.0.1:8080)",
    )
    parser.add_argument(
        "--admin",
        type=_listen_arg,
        default="127.0.0.1:9090",
        metavar="[HOST:]PORT",
        help="the admin listener (default: 127.0.0.1:9090)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    parser.set_defaults(func=cmd_init)
