"""`rankgate explain` on the demo: for one user, the table's order is the order the demo's
proxy serves that user, and its rule effects are what the route's plugins did (the demo
route's one rule, annotate, writes each item's final score into the served item)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml

from demo.run import DEFAULT_CONFIG, Demo
from tests.support.common import fetch

in_demo_loop = pytest.mark.asyncio(loop_scope="module")
LIMIT = 30
TIMING = ("reason=budget", "reason=redis-timeout")


def demo_config(demo: Demo, tmp: Path) -> Path:
    """The demo's rankgate.yaml as this run serves it: its origin, its Valkey, the
    committed routes.yaml."""
    assert demo.settings is not None
    data = demo.settings.model_dump(mode="json", exclude={"base_dir"})
    data["routes"] = str(DEFAULT_CONFIG.parent / "routes.yaml")
    assert demo.proxy is not None
    data["admin"]["port"] = demo.proxy.admin_port  # the port it got (the settings say 0)
    cfg = tmp / "rankgate.yaml"
    cfg.write_text(yaml.safe_dump(data))
    return cfg


async def served(demo: Demo, user: str) -> tuple[str, list[dict[str, object]]]:
    for _ in range(5):
        status, headers, body = await fetch(
            f"{demo.proxy_url}/api/feed?limit={LIMIT}", headers={"X-User-Id": user}
        )
        assert status == 200
        if not any(t in headers["X-Rerank"] for t in TIMING):
            break
        await asyncio.sleep(0.2)
    return headers["X-Rerank"], orjson.loads(body)["items"]


def explain(cfg: Path, user: str, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "proxy", "explain", "--config", str(cfg), "--user", user]
    return subprocess.run(
        [*cmd, *extra, f"/api/feed?limit={LIMIT}"], capture_output=True, text=True, timeout=120
    )


@in_demo_loop
async def test_explain_on_the_demo_matches_what_the_proxy_serves(
    demo: Demo, tmp_path: Path
) -> None:
    cfg = demo_config(demo, tmp_path)
    user = demo.personas[0].user_id
    rerank, items = await served(demo, user)
    assert rerank.startswith("applied")
    text, as_json, admin = await asyncio.gather(
        asyncio.to_thread(explain, cfg, user),
        asyncio.to_thread(explain, cfg, user, "--json"),
        asyncio.to_thread(explain, cfg, user, "--admin"),  # the demo's own rankgate
    )
    assert text.returncode == 0, text.stderr
    assert as_json.returncode == 0, as_json.stderr
    assert admin.returncode == 0, admin.stderr
    ids = [line.split()[2] for line in text.stdout.splitlines()[3:]]
    assert [line.split()[2] for line in admin.stdout.splitlines()[3:]] == ids

    # The table: a header, then one row per served item, in the order served.
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"route home-feed  user {user}  arm ")
    assert "rules: annotate" in lines[1]
    rows = [line.split() for line in lines[3:]]
    assert [r[2] for r in rows] == [it["id"] for it in items]
    assert [int(r[0]) for r in rows] == list(range(len(items)))

    report = orjson.loads(as_json.stdout)
    assert f"model={report['model']}; arm={report['arm']}" in rerank
    (arr,) = report["arrays"]
    assert [it["id"] for it in arr["items"]] == [it["id"] for it in items]
    assert arr["filtered"] == []
    for explained, item in zip(arr["items"], items, strict=True):
        # annotate (round 4) wrote the final score into the served item; no rule here
        # changes scores, so it is the model's own.
        assert explained["final_score"] == pytest.approx(item["_score"], abs=1e-4)
        assert explained["score"] == explained["final_score"]
        assert explained["effects"] == []
    origins = [it["origin"] for it in arr["items"]]
    assert sorted(origins) == list(range(len(items))) and origins != sorted(origins)
