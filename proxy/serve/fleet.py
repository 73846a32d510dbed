"""The admin answers of a supervisor, made from its workers' own (``proxy.serve.admin`` serves
them; each worker answers on a private admin listener).

  /metrics   every ready worker's /metrics, added up: counters and histograms summed
             (what an exited worker had counted stays in the sum), gauges the maximum
             over live workers; plus the supervisor's own worker gauges.
  /healthz   the supervisor's.
  /readyz    each worker's /readyz; 200 when at least one worker is ready (a worker
             only listens once it is), 503 while draining.
  /admin/*   GET goes to one ready worker; other methods (reload) go to all of them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from proxy.experiments.assignments import merge as merge_assignments
from proxy.serve.admin import Answer, Json

SampleKey = tuple[str, tuple[tuple[str, str], ...]]  # (sample name, sorted labels)
# Gauges that are a part per worker, summed (other gauges: the maximum over workers).
SUMMED_GAUGES = frozenset({"rankgate_item_cache_bytes", "rankgate_connections_open"})
# Reads answered by every worker, added up (one worker's counts are a part).
FAN_OUT_GETS = frozenset({"/admin/experiments"})


@dataclass
class Worker:
    index: int
    proc: asyncio.subprocess.Process | None = None
    admin_port: int | None = None
    ready: bool = False
    started: float = 0.0
    restarts: int = 0
    failures: int = 0  # exits in a row before becoming ready
    control: asyncio.ReadTransport | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


class Fleet(Protocol):
    """What the fleet admin reads of its supervisor."""

    workers: list[Worker]
    draining: bool


class FleetMetrics:
    """The workers' metrics added up. ``update`` with a worker's latest scrape, ``retire``
    a worker that exited (its counts stay in the sum), ``collect`` the total."""

    def __init__(self) -> None:
        self.live: dict[int, list[Metric]] = {}  # by pid
        self.retired: dict[SampleKey, float] = {}
        self.kinds: dict[str, tuple[str, str]] = {}  # family -> (type, help)

    def update(self, pid: int, text: str) -> None:
        families = list(text_string_to_metric_families(text))
        for family in families:
            self.kinds[family.name] = (family.type, family.documentation)
        self.live[pid] = families

    def retire(self, pid: int) -> None:
        for family in self.live.pop(pid, []):
            if family.type == "gauge":
                continue  # a dead worker's gauges are not current
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                self.retired[key] = self.retired.get(key, 0.0) + sample.value

    def collect(self) -> Iterator[Metric]:
        sums: dict[str, dict[SampleKey, float]] = {}
        for families in self.live.values():
            for family in families:
                into = sums.setdefault(family.name, {})
                for s in family.samples:
                    key = (s.name, tuple(sorted(s.labels.items())))
                    if family.type == "gauge" and family.name not in SUMMED_GAUGES:
                        into[key] = max(into.get(key, s.value), s.value)
                    else:
                        into[key] = into.get(key, 0.0) + s.value
        for key, value in self.retired.items():
            family_name = self._family_of(key[0])
            into = sums.setdefault(family_name, {})
            into[key] = into.get(key, 0.0) + value
        for name, samples in sums.items():
            kind, doc = self.kinds.get(name, ("untyped", ""))
            metric = Metric(name, doc, kind)
            for (sample_name, labels), value in samples.items():
                metric.add_sample(sample_name, dict(labels), value)
            yield metric

    def _family_of(self, sample_name: str) -> str:
        for suffix in ("_total", "_bucket", "_count", "_sum", "_created"):
            base = sample_name.removesuffix(suffix)
            if base != sample_name and base in self.kinds:
                return base
        return sample_name


class SupervisorCollector:
    """The supervisor's own series: how many workers it wants, has, and restarted."""

    def __init__(self, supervisor: Fleet) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        workers = self.supervisor.workers
        gauge = GaugeMetricFamily(
            "rankgate_workers", "Worker processes by state.", labels=["state"]
        )
        gauge.add_metric(["desired"], len(workers))
        gauge.add_metric(["ready"], sum(1 for w in workers if w.ready))
        gauge.add_metric(["alive"], sum(1 for w in workers if w.alive()))
        yield gauge
        yield CounterMetricFamily(
            "rankgate_worker_restarts",
            "Worker processes restarted after they exited.",
            value=sum(w.restarts for w in workers),
        )


class FleetAdmin:
    """The admin backend of a supervisor (see ``proxy.serve.admin.AdminBackend``)."""

    def __init__(self, supervisor: Fleet, token: str | None) -> None:
        self.supervisor = supervisor
        self.token = token
        self.merged = FleetMetrics()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.merged)
        self.registry.register(SupervisorCollector(supervisor))
        self._client: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> FleetAdmin:
        self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def ready_workers(self) -> list[Worker]:
        return [w for w in self.supervisor.workers if w.ready and w.admin_port is not None]

    async def ask(
        self, w: Worker, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        """One worker's private admin answer: (status, JSON body or text)."""
        assert self._client is not None, "FleetAdmin is used outside its async with"
        url = f"http://127.0.0.1:{w.admin_port}{path}"
        try:
            async with self._client.request(method, url, headers=headers, data=body) as resp:
                raw = await resp.read()
                try:
                    return resp.status, orjson.loads(raw)
                except orjson.JSONDecodeError:
                    return resp.status, raw.decode(errors="replace")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return 502, {"error": f"worker did not answer: {exc!r}"}

    async def ask_text(self, w: Worker, path: str) -> str | None:
        status, body = await self.ask(w, "GET", path, {}, b"")
        return body if status == 200 and isinstance(body, str) else None

    async def refresh(self) -> None:
        """Scrape every ready worker's /metrics into the sum."""
        targets = self.ready_workers()
        answers = await asyncio.gather(*(self.ask_text(w, "/metrics") for w in targets))
        for w, text in zip(targets, answers, strict=True):
            if text is not None and w.pid is not None:
                self.merged.update(w.pid, text)

    def retire(self, pid: int) -> None:
        self.merged.retire(pid)

    async def metrics(self) -> bytes:
        await self.refresh()
        return generate_latest(self.registry)

    async def healthz(self) -> Json:
        sup = self.supervisor
        return {
            "status": "ok",
            "pid": os.getpid(),
            "draining": sup.draining,
            "workers": {"desired": len(sup.workers), "alive": sum(w.alive() for w in sup.workers)},
        }

    async def readyz(self) -> Answer:
        sup = self.supervisor
        asked = self.ready_workers()
        answers = await asyncio.gather(*(self.ask(w, "GET", "/readyz", {}, b"") for w in asked))
        by_index = {w.index: answer for w, answer in zip(asked, answers, strict=True)}
        workers = []
        for w in sup.workers:
            status, body = by_index.get(w.index, (503, {"problems": {"worker": "starting"}}))
            workers.append({"index": w.index, "pid": w.pid, "ready": status == 200, "detail": body})
        ready_count = sum(1 for w in workers if w["ready"])
        problems: dict[str, str] = {}
        if sup.draining:
            problems["draining"] = "shutting down"
        if ready_count == 0:
            problems["workers"] = "no worker is ready"
        body = {
            "ready": not problems,
            "draining": sup.draining,
            "workers_ready": ready_count,
            "workers_desired": len(sup.workers),
            "workers": workers,
            "problems": problems,
        }
        return (200 if not problems else 503), body

    async def admin(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        targets: Sequence[Worker] = self.ready_workers()
        if not targets:
            return 503, {"error": "no worker is ready"}
        fan_out = path.split("?", 1)[0] in FAN_OUT_GETS
        if method in ("GET", "HEAD") and not fan_out:
            targets = targets[:1]
        answers = await asyncio.gather(*(self.ask(w, method, path, headers, body) for w in targets))
        status = next((code for code, _ in answers if code >= 300), answers[0][0])
        if fan_out and status == 200:
            return 200, merge_assignments([body for _, body in answers])
        first = answers[0][1]
        out: dict[str, Any] = dict(first) if isinstance(first, dict) else {"body": first}
        if len(targets) > 1:
            out["workers"] = [
                {"pid": w.pid, "status": code, "body": answer}
                for w, (code, answer) in zip(targets, answers, strict=True)
            ]
        return status, out
