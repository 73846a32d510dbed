"""``rankgate init``: from an origin's feed to a config that ``rankgate check`` passes.

It fetches one response of the feed, finds the item array and the item id field in it
(``proxy.preflight.feedshape``), and writes a commented ``rankgate.yaml`` and ``routes.yaml``:
the origin, an embedded Valkey (no Redis to install), one route for the feed, and a
model (by default the reference model shipped with rankgate, copied beside the config
with its sha256 pinned). Nothing is asked: of several arrays of objects, the only one
that looks like a feed is taken (and the others named); when the body leaves a choice
open (two feed-like arrays, two id-like fields), it lists the candidates and names the
flag that picks one. It never overwrites a file without ``--force``.

This module is the command; proxy/preflight/initprobe.py finds the items and the model,
proxy/preflight/initfiles.py renders and checks the files.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from urllib.parse import urlsplit

from proxy.feed.sample import SampleError, fetch, join
from proxy.preflight.initfiles import render_config, render_routes, validate_files
from proxy.preflight.initprobe import InitError, choose_model, find_feed

DEFAULT_USER = ("cookie:uid", "header:X-User-Id")


def _host_port(value: str, default_host: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return (host or default_host), int(port)


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
    if found.picked():
        say(f"        {found.picked()}")
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
    validate_files(config_text, routes_text, out_dir)

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
