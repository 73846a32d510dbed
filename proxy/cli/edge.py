"""``rankgate edge build`` and ``rankgate edge kv``: the routes as a Cloudflare Worker."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from proxy.cli.options import add_config, config_path, optional_config


def cmd_build(args: argparse.Namespace) -> int:
    from proxy.edge.build import EdgeBuildError, EdgeRefusedError, build

    try:
        config = Path(config_path(args.config, "edge build"))
        result = build(config, Path(args.out), name=args.name, kv_namespace_id=args.kv_namespace_id)
    except EdgeRefusedError as exc:
        print("\n".join(exc.lines), file=sys.stderr)
        return 2
    except EdgeBuildError as exc:
        print(f"rankgate edge build: {exc}", file=sys.stderr)
        return 1
    for line in result.dropped:  # built all the same: serving is the same without them
        print(f"rankgate edge build: not at the edge: {line}", file=sys.stderr)
    sizes = result.manifest["sizes"]
    routes = [r["name"] for r in result.config["routes"]]
    print(
        f"built {args.out}: {len(routes)} route(s) ({', '.join(routes) or 'none'}), "
        f"models {', '.join(result.config['models']) or 'none'}; "
        f"{sizes['raw'] / 1e6:.1f} MB, {sizes['gzip'] / 1e6:.1f} MB gzipped "
        f"(onnxruntime-web {result.manifest['versions']['onnxruntime-web']})"
    )
    return 0


def cmd_kv(args: argparse.Namespace) -> int:
    from proxy.config.settings import Embeddings, load_settings
    from proxy.edge.kv import write_kv
    from proxy.store.loader import LoadError

    config = optional_config(args.config)
    embeddings = load_settings(config).embeddings if config else Embeddings()
    try:
        written = write_kv(Path(args.file), Path(args.out), embeddings, args.kind)
    except LoadError as exc:
        print(f"rankgate edge kv: {exc}", file=sys.stderr)
        return 1
    for kind, files in written.items():
        print(f"{kind}: {', '.join(str(f) for f in files)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("edge", help="run the routes in a Cloudflare Worker")
    cmds = parser.add_subparsers(dest="edge_command", required=True, metavar="ACTION")
    b = cmds.add_parser("build", help="compile the routes, models and Worker into a directory")
    add_config(b)
    b.add_argument("--out", "-o", required=True, help="output directory")
    b.add_argument("--name", default="rankgate", help="the Worker's name in wrangler.toml")
    b.add_argument(
        "--kv-namespace-id",
        default="REPLACE_WITH_YOUR_KV_NAMESPACE_ID",
        help="the KV namespace of the vectors (wrangler kv namespace create EMBEDDINGS)",
    )
    b.set_defaults(func=cmd_build)
    kv = cmds.add_parser("kv", help="write embeddings as Workers KV bulk files")
    kv.add_argument("file", help=".npz (user_* and item_* arrays), .npy or .csv")
    kv.add_argument("--out", "-o", required=True, help="output directory")
    add_config(kv, "rankgate.yaml: takes the keys and dim (default: ./rankgate.yaml if any)")
    kv.add_argument("--kind", choices=("user", "item"), help="for files of one kind")
    kv.set_defaults(func=cmd_kv)
