"""bench/alternative.py, the ranking service bench/run.py measures rankgate against: its
origin serves a tiny feed in the order the model gives (items without a vector keep
their slots), the page as it is for an unknown user, and fails open when the service is
gone. Needs the bench extra (fastapi, uvicorn); skipped without it."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import redis

pytest.importorskip("fastapi", reason="the bench extra is not installed: pip install -e '.[bench]'")
pytest.importorskip("uvicorn", reason="the bench extra is not installed: pip install -e '.[bench]'")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "alternative.py"
MODEL = ROOT / "models" / "ranker_v1.onnx"
DIM = 32
ITEMS = 10  # bench/origin.py's page: ids i0..i9
NO_VECTOR = 3  # i3 has none: it keeps its slot


def start(*args: str) -> tuple[subprocess.Popen[str], str]:
    """A role of bench/alternative.py on a free port: the process and its URL."""
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args, "--port", "0", "--budget-ms", "5000"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("port "), f"{args[0]} did not start: {line!r}"
    return proc, f"http://127.0.0.1:{int(line.split()[1])}"


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def seeded(redis_db: redis.Redis) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    vectors = {f"i{k}": rng.standard_normal(DIM).astype("<f4") for k in range(ITEMS)}
    del vectors[f"i{NO_VECTOR}"]
    user = rng.standard_normal(DIM).astype("<f4")
    redis_db.set("emb:user:alice", user.tobytes())
    for ident, vector in vectors.items():
        redis_db.set(f"emb:item:{ident}", vector.tobytes())
    return {"user": user, **vectors}


@pytest.fixture
def servers(
    redis_url: str, seeded: dict[str, np.ndarray]
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    service, service_url = start("service", "--redis", redis_url, "--model", str(MODEL))
    try:
        origin, origin_url = start("origin", "--service", service_url, "--items", str(ITEMS))
        try:
            yield origin_url, service
        finally:
            stop(origin)
    finally:
        stop(service)


def feed(url: str, user: str) -> tuple[list[str], str, list[dict[str, object]]]:
    req = urllib.request.Request(f"{url}/api/feed", headers={"X-User-Id": user})
    with urllib.request.urlopen(req, timeout=30) as resp:
        items = json.loads(resp.read())["items"]
        return [item["id"] for item in items], resp.headers["X-Rerank"], items


def expected_order(seeded: dict[str, np.ndarray]) -> list[str]:
    """The model's order, worked out here: a stable sort by descending score of the items
    with a vector, in the slots those items had."""
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    scored = [f"i{k}" for k in range(ITEMS) if k != NO_VECTOR]
    items = np.stack([seeded[i] for i in scored])
    users = np.repeat(seeded["user"].reshape(1, DIM), len(scored), axis=0)
    scores = session.run(None, {"user_embedding": users, "item_embedding": items})[0]
    ranked = iter([scored[k] for k in np.argsort(-scores.reshape(-1), kind="stable")])
    return [f"i{k}" if k == NO_VECTOR else next(ranked) for k in range(ITEMS)]


def test_the_origin_serves_the_models_order(
    servers: tuple[str, subprocess.Popen[str]], seeded: dict[str, np.ndarray]
) -> None:
    url, _ = servers
    page = [f"i{k}" for k in range(ITEMS)]
    want = expected_order(seeded)
    assert want != page  # a ranking that changed nothing would prove nothing
    ids, outcome, items = feed(url, "alice")
    assert (ids, outcome) == (want, "applied")
    unranked = {item["id"]: item for item in feed(url, "nobody")[2]}
    assert all(item == unranked[item["id"]] for item in items)  # the origin's own items


def test_an_unknown_user_and_a_gone_service_get_the_page(
    servers: tuple[str, subprocess.Popen[str]],
) -> None:
    url, service = servers
    page = [f"i{k}" for k in range(ITEMS)]
    assert feed(url, "nobody")[:2] == (page, "skipped: unknown-user")
    stop(service)
    ids, outcome, _ = feed(url, "alice")
    assert ids == page
    assert outcome.startswith("skipped: "), outcome
