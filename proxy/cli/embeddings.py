"""``rankgate embeddings load``: bulk-load user or item vectors into Redis (the reading
and writing: proxy/store/loader.py)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TextIO

import numpy as np
import redis

from proxy.cli.options import optional_config
from proxy.store.loader import KINDS, LoadError, load_vectors, read_kinds


def _shown(path: Path) -> str:
    # Relative to the working directory when under it: what a person typed or sees.
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def cmd_load(args: argparse.Namespace) -> int:
    from proxy.config.settings import load_settings
    from proxy.store.connect import sync_client
    from proxy.store.valkey import EmbeddedValkey

    dim = args.dim
    url = args.redis_url
    templates = {k: args.key for k in KINDS} if args.key else {}
    embedded: EmbeddedValkey | None = None
    stopped = False
    buckets = args.buckets
    cluster: bool | None = None  # ask the server
    args.config = optional_config(args.config)
    if args.config:
        settings = load_settings(args.config)
        emb = settings.embeddings
        templates = templates or {"user": emb.user_key, "item": emb.item_key}
        dim = dim or emb.dim
        url = url or settings.redis.url
        buckets = buckets or emb.item_buckets
        cluster = settings.redis.cluster
        if url is None:
            # The config's embedded Valkey: the one `rankgate serve` uses (started for
            # this load if it does not run; its data stays in the directory).
            embedded = EmbeddedValkey.for_settings(settings)
    if not url and embedded is None:
        print("rankgate: no Redis (give --redis-url, or --config rankgate.yaml)", file=sys.stderr)
        return 2
    try:
        loads = read_kinds(Path(args.file), args.kind)
        if args.key and len(loads) > 1:
            raise LoadError(f"{args.file}: --key is one template for two kinds: give user|item")
        for kind, _, vectors in loads:
            if dim is not None and vectors.shape[1] != dim:
                raise LoadError(
                    f"{args.file}: {kind} vectors have dim {vectors.shape[1]}, expected {dim}"
                )
        if embedded is not None:
            url = embedded.start()
            how = "started for this load" if embedded.started else f"running, pid {embedded.pid}"
            if embedded.adopted:  # its rankgate was killed: this load owns it now
                how += ", left by a process that is gone: stopped after this load"
            print(f"embedded Valkey at {url} (data in {_shown(embedded.dir)}; {how})")
        assert url is not None
        _load_all(sync_client(url, cluster, 10.0), loads, templates, buckets or 16, args.quiet)
    except LoadError as exc:
        print(f"rankgate: {exc}", file=sys.stderr)
        return 1
    except redis.RedisError as exc:
        print(f"rankgate: Redis at {url}: {exc}", file=sys.stderr)
        return 1
    finally:
        if embedded is not None:
            stopped = embedded.stop()
    if stopped:
        print("embedded Valkey stopped; `rankgate serve` starts it with this data")
    return 0


class Progress:
    """Vectors loaded, the rate and the time left, redrawn in place on a terminal (at
    most every ``every_s``: a redraw per batch would flood a slow terminal); the line is
    cleared at the end, when the summary line takes its place."""

    def __init__(self, what: str, total: int, out: TextIO, every_s: float = 0.2) -> None:
        self.what, self.total, self.out, self.every_s = what, total, out, every_s
        self.started = time.perf_counter()
        self.drawn = -every_s  # the first batch draws at once

    def __call__(self, done: int) -> None:
        now = time.perf_counter() - self.started
        if done >= self.total or now - self.drawn < self.every_s:
            return
        self.drawn = now
        rate = done / max(now, 1e-6)
        left = (self.total - done) / rate if rate > 0 else 0.0
        self.out.write(
            f"\r\033[K{self.what}: {done} of {self.total} ({100 * done // self.total}%), "
            f"{rate:.0f}/s, {_clock(left)} left"
        )
        self.out.flush()

    def finish(self) -> None:
        if self.drawn >= 0:
            self.out.write("\r\033[K")
            self.out.flush()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _load_all(
    client: redis.Redis | redis.RedisCluster,
    loads: list[tuple[str, list[str], np.ndarray]],
    templates: dict[str, str],
    buckets: int,
    quiet: bool,
) -> None:
    # Progress is for a terminal; a log or a pipe gets the summary line alone.
    live = not quiet and sys.stderr.isatty()
    where = " on a Redis Cluster" if isinstance(client, redis.RedisCluster) else ""
    try:
        for kind, ids, vectors in loads:
            template = templates.get(kind) or f"emb:{kind}:{{id}}"
            progress = Progress(f"{kind} vectors", len(ids), sys.stderr) if live else None
            started = time.perf_counter()
            try:
                count = load_vectors(
                    client,  # type: ignore[arg-type]
                    template,
                    ids,
                    vectors,
                    buckets=buckets,
                    progress=progress,
                )
            finally:
                if progress is not None:
                    progress.finish()
            took = time.perf_counter() - started
            spread = f" ({buckets} buckets)" if "{bucket}" in template else ""
            print(
                f"loaded {count} {kind} vectors (dim {vectors.shape[1]}) as "
                f"{template}{spread}{where} in {took:.2f} s ({count / max(took, 1e-6):.0f}/s)"
            )
    finally:
        client.close()


LOAD_HELP = """\
Bulk-load user or item vectors into Redis: each id's vector is SET under the key
template (embeddings.user_key / item_key: emb:user:{id}, emb:item:{id}) as raw
little-endian float32 bytes, embeddings.dim of them.

file formats:
  .npz  arrays user_ids + user_vectors and/or item_ids + item_vectors; without
        user|item, every pair the file holds is loaded (one file for both). Or ids +
        vectors, with user|item. ids: [N] strings or integers; vectors: [N, dim], any
        float type (float16, float32, float64), all finite.
  .csv  one row per id: id,v0,v1,...; a first row whose last cell is not a number is
        a header, and is skipped.
  .npy  a structured array with fields id and vector, or a plain [N, dim] matrix whose
        ids are the row numbers 0..N-1. Give user|item.

where to:
  --redis-url URL, else the config's redis.url, else the config's embedded Valkey:
  the one `rankgate serve` uses when it runs, else started for the load and stopped
  after (the data stays in redis.embedded.dir).
"""

LOAD_EXAMPLES = """\
examples:
  rankgate embeddings load vectors.npz --config rankgate.yaml
  rankgate embeddings load item items.csv --redis-url redis://127.0.0.1:6379/0 --dim 32
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("embeddings", help="manage embeddings in Redis")
    cmds = parser.add_subparsers(dest="embeddings_command", required=True, metavar="ACTION")
    load = cmds.add_parser(
        "load",
        help="bulk-load user or item vectors (.npz, .npy, .csv)",
        description=LOAD_HELP,
        epilog=LOAD_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    load.add_argument(
        "kind",
        nargs="?",
        choices=KINDS,
        help="which vectors the file holds (optional for an npz with user_/item_ arrays)",
    )
    load.add_argument("file", metavar="FILE")
    load.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="rankgate.yaml: its Redis (or embedded Valkey), keys and dim "
        "(default: ./rankgate.yaml when there is one)",
    )
    load.add_argument("--redis-url", help="overrides the config's Redis")
    load.add_argument("--key", help="key template with {id} (default from config)")
    load.add_argument("--dim", type=int, help="expected dimension (default from config)")
    load.add_argument(
        "--buckets",
        type=int,
        help="item_buckets for a {bucket} template (default from config, else 16)",
    )
    load.add_argument(
        "--quiet", "-q", action="store_true", help="no progress line (shown on a terminal)"
    )
    load.set_defaults(func=cmd_load)
