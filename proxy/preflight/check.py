"""``rankgate check --config FILE``: validate everything without serving, like ``nginx -t``.

One line per check, ``ok`` or ``FAIL`` (and ``warn`` for what works but looks wrong):
the static config, the routes file, every model (file, sha256 pin, contract, a warm-up
run, loaded exactly as serving loads them), then Redis (PING, a cluster's primaries, up
to 100 sampled user and item vectors' lengths against ``embeddings.dim``, and with
``routes_source: redis`` the stored routes version, checked like the file) and the
origin (any HTTP answer to ``HEAD /`` counts as reachable), then probes each feed route
(``proxy/preflight/probe.py``: one GET of a sample, items, ids, vectors, a dry run).
With no ``redis.url``, the config's embedded Valkey is used: the running one, or
started for the check and stopped after. Exit status 0 when nothing failed, 1
otherwise. ``--offline`` skips Redis, the origin and the probes (a CI job that only
checks files).
"""

from __future__ import annotations

import http.client
import ssl
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO
from urllib.parse import urlsplit

import numpy as np

from proxy.config.settings import Settings, load_settings
from proxy.config.yamlload import ConfigError
from proxy.preflight.report import Report, shown_path

if TYPE_CHECKING:
    import redis

    from proxy.routing.snapshot import Snapshot

NETWORK_TIMEOUT_S = 3.0


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def check_config(path: Path, report: Report) -> Settings | None:
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        for problem in exc.problems:
            report.line("FAIL", "config", f"{exc.source}: {problem}")
        return None
    s = settings
    report.line(
        "ok",
        "config",
        f"{path}: listen {s.listen.host}:{s.listen.port}, admin {s.admin.host}:{s.admin.port}, "
        f"origin {s.origin.url}, workers {s.workers or 'auto'}",
    )
    if s.tracing.enabled:
        check_tracing(s, report)
    return settings


def check_tracing(settings: Settings, report: Report) -> None:
    """Whether the optional OpenTelemetry exporter is installed (the start needs it)."""
    import importlib.util

    t = settings.tracing
    try:
        found = importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        report.line(
            "FAIL", "tracing", "tracing.enabled: needs OpenTelemetry: pip install 'rankgate[otel]'"
        )
        return
    report.line(
        "ok",
        "tracing",
        f"OTLP/HTTP to {t.endpoint}/v1/traces, sample_ratio {t.sample_ratio:g} (parent-based), "
        f"service {t.service_name}",
    )


def check_routes(settings: Settings, report: Report) -> Snapshot | None:
    from proxy.config.routes import RoutesFile
    from proxy.config.yamlload import load
    from proxy.routing.limits import RoutesPolicy
    from proxy.routing.snapshot import build_snapshot

    path = settings.routes_path
    if settings.routes_source == "redis" and not path.exists():
        report.line("ok", "routes", f"routes_source: redis, no {path} (the pushed version serves)")
        return
    try:
        # The same build a start or a reload does: parse, validate, hash, load, warm.
        policy = RoutesPolicy.from_settings(settings)
        snapshot = build_snapshot(path, settings.embeddings.dim, 1, None, policy)
    except ConfigError as exc:
        for problem in exc.problems:
            what = "model" if problem.startswith("models.") else "routes"
            report.line("FAIL", what, f"{exc.source}: {problem}")
        return None
    routes = ", ".join(r.name for r in snapshot.routes) or "none"
    report.line(
        "ok",
        "routes",
        f"{shown_path(path)}: {_n(len(snapshot.routes), 'route')} ({routes}), "
        f"{_n(len(snapshot.models), 'model')}",
    )
    pinned = {name: ref.sha256 for name, ref in load(RoutesFile, path).models.items()}
    for name, model in sorted(snapshot.models.items()):
        detail = (
            f"{name}: {shown_path(model.path)}, {model.size / 1024:.1f} KB, dim {model.dim}, "
            f"sha256 {model.sha256[:12]}..., warm-up {_ms(model.load_seconds)}"
        )
        if pinned.get(name):
            report.line("ok", "model", detail + ", sha256 pinned")
        else:
            report.line("warn", "model", detail + f", not pinned (sha256: {model.sha256})")
    used = {m for r in snapshot.routes for a in r.arms.all() for m in a.models} | {
        a.shadow.model for r in snapshot.routes for a in r.arms.all() if a.shadow is not None
    }
    for name in sorted(set(snapshot.models) - used):
        report.line("warn", "model", f"{name}: loaded but no route uses it")
    return snapshot


def check_redis(settings: Settings, url: str, report: Report, what: str = "") -> redis.Redis | None:
    """PING and one user vector's length; the client (for the probes) unless it failed."""
    import redis

    from proxy.store.connect import sync_client

    shown = what or _redact(url)
    try:
        # A RedisCluster when the server is one (or redis.cluster says so).
        client = sync_client(url, settings.redis.cluster, NETWORK_TIMEOUT_S)
    except redis.RedisError as exc:
        report.line("FAIL", "redis", f"{shown}: {type(exc).__name__}: {exc}")
        return None
    try:
        started = time.perf_counter()
        client.ping()
        elapsed = time.perf_counter() - started
        budget = settings.redis.timeout_ms / 1000
        if elapsed > budget:
            report.line(
                "warn",
                "redis",
                f"{shown}: PING took {_ms(elapsed)}, over redis.timeout_ms ({_ms(budget)})",
            )
        else:
            report.line("ok", "redis", f"{shown}: PING {_ms(elapsed)}")
        if isinstance(client, redis.RedisCluster):
            primaries = sorted(n.name for n in client.get_primaries())
            report.line(
                "ok",
                "redis",
                f"a cluster of {len(primaries)} primaries: " + ", ".join(primaries),
            )
        check_vectors(settings, client, report)
        if settings.routes_source == "redis":
            check_stored_routes(settings, client, report)
    except redis.RedisError as exc:
        report.line("FAIL", "redis", f"{shown}: {type(exc).__name__}: {exc}")
        client.close()
        return None
    return client


VECTOR_SAMPLE = 100  # keys read per kind (user, item): a check, not a scan of the keyspace
SCAN_CALLS = 20  # SCAN calls at most per kind: few matching keys among many is not walked


def check_vectors(settings: Settings, client: object, report: Report) -> None:
    """Sampled user and item vectors against ``embeddings.dim``: a user vector of the wrong
    length (or with NaN/inf) makes that user's requests 'bad-vector', an item's leaves it
    unscored. One line per kind, with how many of the sample are wrong."""
    import redis

    assert isinstance(client, (redis.Redis, redis.RedisCluster))
    emb = settings.embeddings
    need = emb.dim * 4
    kinds = (("user", emb.user_key, "bad-vector"), ("item", emb.item_key, "no-item-vectors"))
    for kind, template, reason in kinds:
        pattern = template.replace("*", r"\*").replace("{bucket}", "*").replace("{id}", "*")
        keys = _sample_keys(client, pattern)
        if not keys:
            status = "warn" if kind == "user" else "ok"
            report.line(status, "vectors", f"no key matches {template!r} (no {kind} vectors yet?)")
            continue
        raws = _get_all(client, keys)
        short = [(k, r) for k, r in zip(keys, raws, strict=True) if len(r or b"") != need]
        sized = [r for r in raws if r is not None and len(r) == need]
        nonfinite = sum(1 for r in sized if not np.isfinite(np.frombuffer(r, "<f4")).all())
        if not short and not nonfinite:
            report.line(
                "ok", "vectors", f"{kind} vectors are {emb.dim} float32 ({len(keys)} sampled)"
            )
            continue
        parts = []
        if short:
            key, raw = short[0]
            parts.append(
                f"{len(short)} of {len(keys)} sampled {kind} vectors have the wrong length "
                f"(e.g. {key.decode(errors='replace')}: {len(raw or b'')} bytes, "
                f"embeddings.dim={emb.dim} needs {need} (float32))"
            )
        if nonfinite:
            parts.append(f"{nonfinite} of {len(keys)} sampled {kind} vectors hold NaN/inf")
        report.line("FAIL", "vectors", "; ".join(parts) + f": reason={reason} for those")


def _sample_keys(client: redis.Redis | redis.RedisCluster, pattern: str) -> list[bytes]:
    import redis as redis_mod

    if not isinstance(client, redis_mod.Redis):  # a cluster: scan_iter visits each node
        found = client.scan_iter(match=pattern, count=1000)
        return [key for _, key in zip(range(VECTOR_SAMPLE), found, strict=False)]
    keys: list[bytes] = []
    cursor = 0
    for _ in range(SCAN_CALLS):
        cursor, batch = client.scan(cursor, match=pattern, count=1000)
        keys += batch
        if cursor == 0 or len(keys) >= VECTOR_SAMPLE:
            break
    return keys[:VECTOR_SAMPLE]


def _get_all(client: redis.Redis | redis.RedisCluster, keys: list[bytes]) -> list[bytes | None]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
    return list(pipe.execute())


def check_stored_routes(settings: Settings, client: object, report: Report) -> None:
    """routes_source: redis: the version the fleet follows, checked as a reload would."""
    from proxy.routing import signing, versions
    from proxy.routing.versions import validate

    cfg = settings.routes_redis
    try:
        key = signing.key_from_env(cfg.key_env)
    except signing.RoutesKeyError as exc:
        report.line("FAIL", "routes", f"routes_source: redis: {exc}")
        return
    max_bytes = settings.routes_limits.max_bytes
    stored = versions.fetch(client, cfg, max_bytes)  # type: ignore[arg-type]
    if stored is None:
        report.line("warn", "routes", f"redis key {cfg.key}: no version pushed yet")
        return
    label = f"redis key {cfg.key} version {stored.head.version}"
    problem = (
        f"{stored.size} bytes, over routes_limits.max_bytes ({max_bytes})"
        if stored.size > max_bytes
        else None
        if stored.intact
        else "the bytes do not hash to the stored sha256"
    ) or stored.signature_problem(key, cfg.key)
    if problem is not None:  # checked before the YAML is parsed, as a process does
        report.line("FAIL", "routes", f"{label}: {problem}")
        return
    try:
        summary = validate(settings, Path(label), stored.raw)
    except ConfigError as exc:
        for problem in exc.problems:
            report.line("FAIL", "routes", f"{exc.source}: {problem}")
        return
    live = versions.fleet(client, cfg)  # type: ignore[arg-type]
    behind = sum(1 for e in live if e.get("version") != stored.head.version)
    report.line("ok", "routes", f"{summary}; {_n(len(live), 'live process')}, {behind} behind")


def check_origin(settings: Settings, report: Report) -> None:
    origin = settings.origin
    parts = urlsplit(origin.url)
    timeout = min(origin.connect_timeout_s + origin.timeout_s, NETWORK_TIMEOUT_S * 2)
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    path = (parts.path or "") + "/"
    try:
        started = time.perf_counter()
        conn.request("HEAD", path, headers={"User-Agent": "rankgate-check"})
        resp = conn.getresponse()
        elapsed = time.perf_counter() - started
        report.line("ok", "origin", f"{origin.url}: HEAD {path} -> {resp.status} in {_ms(elapsed)}")
    except (OSError, http.client.HTTPException) as exc:
        report.line("FAIL", "origin", f"{origin.url}: {type(exc).__name__}: {exc}")
    finally:
        conn.close()


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


def run_checks(config: str | Path, offline: bool = False, out: TextIO | None = None) -> Report:
    from proxy.preflight.probe import probe_routes
    from proxy.store.valkey import EmbeddedValkey

    report = Report(out if out is not None else sys.stdout)
    settings = check_config(Path(config), report)
    if settings is None:
        return report
    snapshot = check_routes(settings, report)
    if offline:
        return report
    embedded: EmbeddedValkey | None = None
    client: redis.Redis | None = None
    try:
        if settings.redis.url is not None:
            client = check_redis(settings, settings.redis.url, report)
        else:
            # The embedded Valkey `rankgate serve` uses: running, or started for this.
            embedded = EmbeddedValkey.for_settings(settings)
            try:
                url = embedded.start()
            except ConfigError as exc:
                report.line("FAIL", "redis", f"no redis.url: embedded Valkey: {exc.problems[0]}")
                embedded = None
            else:
                how = "started for this check" if embedded.started else f"pid {embedded.pid}"
                if embedded.adopted:
                    how += ", left by a process that is gone: stopped after this check"
                what = f"embedded Valkey {url} ({how}, data in {shown_path(embedded.dir)})"
                client = check_redis(settings, url, report, what)
        check_origin(settings, report)
        if snapshot is not None:
            probe_routes(settings, snapshot, client, report)
    finally:
        if client is not None:
            client.close()
        if embedded is not None:
            embedded.stop()
    return report
