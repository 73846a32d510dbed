"""ONNX Runtime sessions: created once per model file, warmed, shared by all requests."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.contract import (
    ITEM_INPUT,
    USER_INPUT,
    ModelContractError,
    check_signature,
    open_session,
    sha256_bytes,
)

WARM_BATCH = 100


@dataclass(frozen=True, eq=False)
class ModelSession:
    """A loaded, checked and warmed model. Thread-safe: ORT allows concurrent run()."""

    name: str
    path: Path
    sha256: str
    size: int
    dim: int
    session: ort.InferenceSession = field(repr=False)
    load_seconds: float = 0.0
    loaded_at: float = 0.0

    def score(self, user: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores for N items (rows of ``items``) for one user: one batched run()."""
        users = np.repeat(user.reshape(1, -1), items.shape[0], axis=0)  # C-contiguous
        out = self.session.run(None, {USER_INPUT: users, ITEM_INPUT: items})[0]
        scores = np.asarray(out, dtype=np.float32).reshape(-1)
        if scores.shape[0] != items.shape[0]:
            raise ModelContractError(
                f"model returned {scores.shape[0]} scores for {items.shape[0]} items"
            )
        return scores


def load_model(
    name: str,
    path: Path,
    dim: int,
    expected_sha256: str | None = None,
    data: bytes | None = None,
) -> ModelSession:
    """Read (unless ``data`` holds the file's bytes, read within the snapshot's limits),
    verify, open, check and warm a model. Blocking: call it off the event loop."""
    started = time.perf_counter()
    if data is None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ModelContractError(f"file not found: {path}") from None
        except OSError as exc:
            raise ModelContractError(f"cannot read {path}: {exc.strerror}") from None
    digest = sha256_bytes(data)
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise ModelContractError(
            f"sha256 mismatch: file is {digest}, expected {expected_sha256} (not the reviewed file)"
        )
    session = open_session(data)
    check_signature(session, dim)
    model = ModelSession(
        name=name,
        path=path,
        sha256=digest,
        size=len(data),
        dim=dim,
        session=session,
    )
    # One warm run so no request pays for lazy allocations; it also proves the model
    # accepts a batch other than 1 and returns one score per item.
    rng = np.random.default_rng(0)
    try:
        model.score(
            rng.standard_normal(dim, dtype=np.float32),
            rng.standard_normal((WARM_BATCH, dim), dtype=np.float32),
        )
    except ModelContractError:
        raise
    except Exception as exc:
        raise ModelContractError(f"warm-up run failed: {str(exc).splitlines()[0]}") from None
    elapsed = time.perf_counter() - started
    return ModelSession(
        name=name,
        path=path,
        sha256=digest,
        size=len(data),
        dim=dim,
        session=session,
        load_seconds=elapsed,
        loaded_at=time.time(),
    )
