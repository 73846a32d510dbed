"""``rankgate edge kv``: embeddings as Workers KV bulk files, for the edge Worker.

Keys are the proxy's (``embeddings.user_key`` / ``item_key`` with ``{id}`` replaced); a
value is the vector's little-endian float32 bytes, the layout Redis holds, base64-encoded
as text: KV's bulk read (100 keys in one operation; a Worker may make 1,000 operations
per request) returns text only, and the Worker decodes it. A file is a JSON array of
``{"key": ..., "value": ...}`` (the format of ``wrangler kv bulk put``), at most
``CHUNK`` pairs each.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

from proxy.config.settings import Embeddings
from proxy.store.loader import F32, LoadError, read_file

CHUNK = 10_000  # pairs per bulk file (the KV bulk write API's limit per request)
KINDS = ("user", "item")


def entries(template: str, ids: list[str], vectors: np.ndarray) -> list[dict[str, str]]:
    """One bulk entry per id; refuses vectors with NaN/inf (the Worker would skip them)."""
    if vectors.ndim != 2 or len(ids) != vectors.shape[0]:
        raise LoadError(f"{len(ids)} ids for a vector array of shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        bad = int((~np.isfinite(vectors).all(axis=1)).sum())
        raise LoadError(f"{bad} vectors hold NaN or inf")
    data = np.ascontiguousarray(vectors, dtype=F32)
    return [
        {
            "key": template.replace("{id}", str(ident)),
            "value": base64.b64encode(row.tobytes()).decode("ascii"),
        }
        for ident, row in zip(ids, data, strict=True)
    ]


def read_kinds(path: Path, kind: str | None) -> dict[str, tuple[list[str], np.ndarray]]:
    """{kind: (ids, vectors)}: both kinds of an npz that has them, or the one asked for."""
    if kind is not None:
        return {kind: read_file(path, kind)}
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            present = [k for k in KINDS if f"{k}_ids" in npz and f"{k}_vectors" in npz]
        if present:
            return {k: read_file(path, k) for k in present}
    raise LoadError(
        f"{path}: give --kind user or --kind item (only an .npz with user_ids/user_vectors "
        "or item_ids/item_vectors names its kinds)"
    )


def write_kv(
    path: Path, out: Path, embeddings: Embeddings, kind: str | None = None
) -> dict[str, list[Path]]:
    """Write ``{kind}s-NNN.json`` files into ``out``; returns them by kind."""
    written: dict[str, list[Path]] = {}
    for name, (ids, vectors) in read_kinds(path, kind).items():
        if vectors.shape[1] != embeddings.dim:
            raise LoadError(
                f"{path}: {name} vectors have dim {vectors.shape[1]}, expected {embeddings.dim}"
            )
        template = embeddings.user_key if name == "user" else embeddings.item_key
        pairs = entries(template, ids, vectors)
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob(f"{name}s-*.json"):
            stale.unlink()
        files = []
        for n, start in enumerate(range(0, len(pairs), CHUNK), start=1):
            target = out / f"{name}s-{n:03d}.json"
            target.write_text(json.dumps(pairs[start : start + CHUNK]))
            files.append(target)
        written[name] = files
    return written
