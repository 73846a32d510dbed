"""docs/guides/guardrails.md: its status and resume session runs as written, against a
trip made by the guardrail itself from real counts in a real Valkey."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import redis

from proxy.config.routes import RoutesFile
from proxy.experiments.guardrails import Guard
from proxy.experiments.guardstore import Batch, RedisGuardStore
from tests.support import docs_shell

ROOT = Path(__file__).resolve().parents[2]
GUIDE = (ROOT / "docs" / "guides" / "guardrails.md").read_text()
ROUTES = """\
models: {ranker_v1: {path: ranker_v1.onnx}, ranker_v2: {path: ranker_v1.onnx}}
routes:
  - name: home-feed
    match: {path: /api/feed}
    model: ranker_v1
    experiments:
      - name: beta
        when: {percent: 10, salt: spring-test}
        model: ranker_v2
        guardrails: {not_applied: +5pp}
"""


async def trip(url: str) -> None:
    """142 requests of beta, all failing, against 150 fine ones: the guard trips it."""
    import yaml

    routes = RoutesFile.model_validate(yaml.safe_load(ROUTES)).routes
    store = RedisGuardStore(url)
    guard = Guard(store, lambda: routes)
    try:
        batch = Batch()
        batch.add("beta:0", "requests", 142)
        batch.add("beta:0", "own", 142)
        batch.add("default:0", "requests", 150)
        await store.add("home-feed", batch, 60)
        await guard.tick()
        assert guard.moved("home-feed", "beta")
    finally:
        await store.close()


async def test_the_session_runs_as_written(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> None:
    (tmp_path / "routes.yaml").write_text(ROUTES)
    (tmp_path / "ranker_v1.onnx").write_bytes((ROOT / "models" / "ranker_v1.onnx").read_bytes())
    (tmp_path / "rankgate.yaml").write_text(
        textwrap.dedent(
            f"""\
            origin: {{url: "http://127.0.0.1:9"}}
            redis: {{url: "{redis_url}"}}
            routes: routes.yaml
            """
        )
    )
    await trip(redis_url)
    steps = docs_shell.steps(docs_shell.section(GUIDE, "guardrails-session"))
    assert [s.command.split()[:3] for s in steps] == [
        ["rankgate", "experiments", "status"],
        ["rankgate", "experiments", "resume"],
        ["rankgate", "experiments", "status"],
    ]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    docs_shell.run(steps, tmp_path, env)
    assert not redis_db.hexists("rankgate:guardrails", "home-feed beta")


def test_the_guides_routes_validate() -> None:
    import re

    import yaml

    for page in ("guardrails.md", "bandits.md"):
        text = (ROOT / "docs" / "guides" / page).read_text()
        (block,) = re.findall(r"```yaml\n(.*?)```", text, re.S)
        doc = yaml.safe_load(block)
        models = {m: {"path": f"{m}.onnx"} for m in ("ranker_v1", "ranker_v2", "ranker_v3")}
        RoutesFile.model_validate({"models": models, **doc})
