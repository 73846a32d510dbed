"""``rankgate embeddings load``: bulk-load user or item vectors into Redis.

Inputs (``LOAD_HELP`` below, which ``--help`` prints): ``.npz`` (``user_ids`` +
``user_vectors`` and/or ``item_ids`` + ``item_vectors``, or ``ids`` + ``vectors``),
``.npy`` (a structured array with ``id`` and ``vector`` fields, or a plain [N, D] matrix
whose ids are the row numbers), or CSV (``id,v0,v1,...``). Values are written as raw
little-endian float32 bytes, pipelined.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import redis

from proxy.config.keys import KeyTemplate

KINDS = ("user", "item")

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
    progress: Callable[[int], None] | None = None,
) -> int:
    """SET each id's vector under ``key_template`` (``{id}``, and ``{bucket}`` as the
    proxy computes it, replaced); returns the count. ``client`` may be a RedisCluster:
    its pipeline sends each node its own keys. ``progress`` is called with the count
    written so far after each pipelined batch."""
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
        if progress is not None:
            progress(done)
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


def read_kinds(path: Path, kind: str | None) -> list[tuple[str, list[str], np.ndarray]]:
    """[(kind, ids, vectors)]: the one kind asked for, or, without one, every kind an
    npz names (``user_ids``/``user_vectors``, ``item_ids``/``item_vectors``)."""
    if kind is not None:
        return [(kind, *read_file(path, kind))]
    if path.suffix.lower() != ".npz":
        raise LoadError(f"{path}: say which vectors these are: embeddings load user|item {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
    except (OSError, ValueError) as exc:
        raise LoadError(f"{path}: {exc}") from None
    kinds = [k for k in KINDS if {f"{k}_ids", f"{k}_vectors"} <= names]
    if not kinds:
        raise LoadError(
            f"{path}: want arrays user_ids + user_vectors and/or item_ids + item_vectors "
            f"(or ids + vectors with user|item before the file); found {sorted(names)}"
        )
    return [(k, *read_file(path, k)) for k in kinds]
