"""``rankgate experiments report --config rankgate.yaml`` on the default setup (what
``rankgate init`` writes: no redis.url, an embedded Valkey): it reads the running Valkey
while ``serve`` runs, and starts it for the read (and stops it after) once serve stopped.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson

from tests.e2e.test_newcomer_e2e import set_up, site  # noqa: F401 (a fixture)
from tests.support.common import ProxyProcess, fetch, valkey_pids

TOKEN_KEY = "report-embedded-token-key-32-by!"


async def report(config: Path) -> tuple[dict[str, object], str]:
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "proxy", "experiments", "report"),
        *("--config", str(config), "--json"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return orjson.loads(out), err.decode()


async def test_the_report_reads_the_embedded_valkey_running_or_not(site: Path) -> None:  # noqa: F811
    config = await set_up(site)
    data = config.parent / ".rankgate" / "valkey"
    # What docs/guides/experiments.md tells a user to add to the file init wrote.
    with config.open("a") as fh:
        fh.write("exposures: {enabled: true}\nevents: {enabled: true}\n")
    proc = await ProxyProcess.start(config, env={"RANKGATE_TOKEN_KEY": TOKEN_KEY})
    try:
        for user in ("alice", "bob", "alice"):
            status, headers, body = await fetch(proc.url("/api/posts"), headers={"X-User-Id": user})
            assert status == 200 and "X-Rankgate-Id" in headers
        token = headers["X-Rankgate-Id"]
        first = orjson.loads(body)["data"]["posts"][0]["pid"]
        click = orjson.dumps({"id": token, "item": first, "type": "click"})
        status, _, _ = await fetch(
            proc.url("/_rankgate/events"),
            method="POST",
            data=click,
            headers={"Content-Type": "text/plain"},
        )
        assert status == 202
        running = valkey_pids(data)
        assert len(running) == 1
        for _ in range(100):  # the sink writes every 100 ms
            body_json, err = await report(config)
            if body_json["records"]["events"] == 1:  # type: ignore[index]
                break
            await asyncio.sleep(0.1)
        assert f"running, pid {running[0]}" in err
        assert valkey_pids(data) == running  # serve's Valkey: used, not stopped
    finally:
        assert await proc.stop() == 0
    assert valkey_pids(data) == []
    after, err = await report(config)
    assert "started for this read" in err
    assert valkey_pids(data) == []  # stopped after the read
    records = after["records"]
    assert records == body_json["records"]  # type: ignore[comparison-overlap]
    assert records["exposures"] == 3 and records["events"] == 1  # type: ignore[index]
    arm = after["routes"][0]["arms"][0]  # type: ignore[index]
    assert arm["clicks"] == 1 and arm["units"] == 2
