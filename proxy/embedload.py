"""``rankgate embeddings load``: bulk-load user or item vectors into Redis.

Inputs: ``.npz`` (arrays ``ids`` + ``vectors``, or ``user_ids``/``user_vectors`` and
``item_ids``/``item_vectors``), ``.npy`` (a structured array with ``id`` and ``vector``
fields, or a plain [N, D] matrix with ``--ids-from-row``), or CSV (``id,v0,v1,...``).
Values are written as raw little-endian float32 bytes, pipelined.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import redis

from proxy.keys import KeyTemplate

F32 = np.dtype("<f4")


class LoadError(Exception):
    pass


def load_vectors(
    client: redis.Redis,
    key_template: str,
    ids: Sequence[str],
    vectors: np.ndarray,
    *,
    buckets: int = 16,
    batch: int = 1000,
    progress: bool = False,
) -> int:
    """SET each id's vector under ``key_template`` (``{id}``, and ``{bucket}`` as the
    proxy computes it, replaced); returns the count. ``client`` may be a RedisCluster:
    its pipeline sends each node its own keys."""
    try:
        template = KeyTemplate(key_template, buckets)
    except ValueError as exc:
        raise LoadError(f"key template: {exc}") from None
    if vectors.ndim != 2 or len(ids) != vectors.shape[0]:
        raise LoadError(f"{len(ids)} ids for a vector array of shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        bad = int((~np.isfinite(vectors).all(axis=1)).sum())
        raise LoadError(f"{bad} vectors hold NaN or inf")
    data = np.ascontiguousarray(vectors, dtype=F32)
    total = len(ids)
    done = 0
    for start in range(0, total, batch):
        pipe = client.pipeline(transaction=False)
        for ident, row in zip(ids[start : start + batch], data[start : start + batch], strict=True):
            pipe.set(template.key(str(ident)), row.tobytes())
        pipe.execute()
        done = min(start + batch, total)
        if progress:
            width = 30
            filled = width * done // total
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
            sys.stderr.flush()
    if progress and total:
        sys.stderr.write("\n")
    return done


def read_file(path: Path, kind: str) -> tuple[list[str], np.ndarray]:
    """(ids, vectors [N, D]) from an npz, npy or csv file."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                for ids_key, vec_key in ((f"{kind}_ids", f"{kind}_vectors"), ("ids", "vectors")):
                    if ids_key in npz and vec_key in npz:
                        ids = [str(i) for i in npz[ids_key].tolist()]
                        return ids, np.asarray(npz[vec_key], dtype=np.float32)
                raise LoadError(
                    f"{path}: want arrays '{kind}_ids' and '{kind}_vectors' (or 'ids' and "
                    f"'vectors'); found {sorted(npz.files)}"
                )
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
            if arr.dtype.names and {"id", "vector"} <= set(arr.dtype.names):
                return [str(i) for i in arr["id"].tolist()], np.asarray(arr["vector"], np.float32)
            if arr.ndim == 2:
                return [str(i) for i in range(arr.shape[0])], arr.astype(np.float32)
            raise LoadError(f"{path}: want a structured array (id, vector) or an [N, D] matrix")
        if suffix == ".csv":
            ids: list[str] = []
            rows: list[list[float]] = []
            with path.open(newline="") as fh:
                for lineno, row in enumerate(csv.reader(fh), start=1):
                    if not row or (lineno == 1 and not _is_number(row[-1])):
                        continue  # blank line or header
                    try:
                        rows.append([float(v) for v in row[1:]])
                    except ValueError:
                        raise LoadError(f"{path}:{lineno}: not a number in {row[1:]}") from None
                    ids.append(row[0])
            if len({len(r) for r in rows}) > 1:
                raise LoadError(f"{path}: rows have different lengths")
            return ids, np.asarray(rows, dtype=np.float32).reshape(len(rows), -1)
    except (OSError, ValueError) as exc:
        raise LoadError(f"{path}: {exc}") from None
    raise LoadError(f"{path}: unknown format (want .npz, .npy or .csv)")


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def cmd_load(args: argparse.Namespace) -> int:
    from proxy.config import load_settings
    from proxy.redisconnect import sync_client

    template = args.key
    dim = args.dim
    url = args.redis_url
    buckets = args.buckets
    cluster: bool | None = None  # ask the server
    if args.config:
        settings = load_settings(args.config)
        emb = settings.embeddings
        template = template or (emb.user_key if args.kind == "user" else emb.item_key)
        dim = dim or emb.dim
        url = url or settings.redis.url
        buckets = buckets or emb.item_buckets
        cluster = settings.redis.cluster
    template = template or f"emb:{args.kind}:{{id}}"
    if not url:
        print(
            "rankgate: no Redis URL (give --redis-url or a config with redis.url)", file=sys.stderr
        )
        return 2
    try:
        ids, vectors = read_file(Path(args.file), args.kind)
        if dim is not None and vectors.shape[1] != dim:
            raise LoadError(f"{args.file}: vectors have dim {vectors.shape[1]}, expected {dim}")
        client = sync_client(url, cluster, 10.0)
        count = load_vectors(
            client, template, ids, vectors, buckets=buckets or 16, progress=not args.quiet
        )
    except LoadError as exc:
        print(f"rankgate: {exc}", file=sys.stderr)
        return 1
    except redis.RedisError as exc:
        print(f"rankgate: Redis at {url}: {exc}", file=sys.stderr)
        return 1
    where = " on a Redis Cluster" if isinstance(client, redis.RedisCluster) else ""
    spread = f" ({buckets or 16} buckets)" if "{bucket}" in template else ""
    print(
        f"loaded {count} {args.kind} vectors (dim {vectors.shape[1]}) as {template}{spread}{where}"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("embeddings", help="manage embeddings in Redis")
    cmds = parser.add_subparsers(dest="embeddings_command", required=True, metavar="ACTION")
    load = cmds.add_parser("load", help="bulk-load user or item vectors (.npz, .npy, .csv)")
    load.add_argument("kind", choices=("user", "item"))
    load.add_argument("file")
    load.add_argument("--config", "-c", help="rankgate.yaml: takes redis.url, keys and dim")
    load.add_argument("--redis-url", help="overrides the config's redis.url")
    load.add_argument("--key", help="key template with {id} (default from config)")
    load.add_argument("--dim", type=int, help="expected dimension (default from config)")
    load.add_argument(
        "--buckets",
        type=int,
        help="item_buckets for a {bucket} template (default from config, else 16)",
    )
    load.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    load.set_defaults(func=cmd_load)
