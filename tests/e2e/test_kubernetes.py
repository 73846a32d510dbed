"""deploy/kubernetes, checked offline (no cluster runs here): every manifest against the
Kubernetes schemas (kubernetes-validate --strict), and against rankgate itself: the
ports, probe paths and scrape annotations it serves, the drain it does on SIGTERM, the
user the image runs as, and the config and routes it would load."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.config.settings import Settings, load_settings
from proxy.config.yamlload import ConfigError
from proxy.routing.snapshot import build_snapshot
from proxy.serve.admin import LocalAdmin, build_admin_app

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
VALIDATE = str(Path(sys.executable).with_name("kubernetes-validate"))
# The oldest and the newest Kubernetes the manifests are checked against.
VERSIONS = ("1.30.0", "1.37.0")
IMAGE_MODELS = "/opt/rankgate/models"


def manifests() -> list[Path]:
    return sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")


def load(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((DEPLOY / name).read_text())
    assert isinstance(doc, dict)
    return doc


def validate(*files: Path, version: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [VALIDATE, "--strict", "-k", version, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_validate_strictly(version: str) -> None:
    result = validate(*manifests(), version=version)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(manifests())


def test_the_validator_refuses_a_typo(tmp_path: Path) -> None:
    """--strict really rejects a field Kubernetes does not know (the check can fail)."""
    text = (DEPLOY / "deployment.yaml").read_text().replace("readinessProbe:", "readinesProbe:")
    (tmp_path / "deployment.yaml").write_text(text)
    result = validate(tmp_path / "deployment.yaml", version=VERSIONS[-1])
    assert result.returncode != 0 and "readinesProbe" in result.stdout + result.stderr


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load("kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(p.name for p in manifests())
    assert [i["name"] for i in kustomization["images"]] == [container()["image"]]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_renders_what_validates(tmp_path: Path) -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=60
    )
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    assert sorted(d["kind"] for d in docs) == sorted(
        ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"]
    )
    (tmp_path / "all.yaml").write_text(rendered.stdout)
    result = validate(tmp_path / "all.yaml", version=VERSIONS[-1])
    assert result.returncode == 0, result.stdout + result.stderr


def pod() -> dict[str, Any]:
    return load("deployment.yaml")["spec"]["template"]


def container() -> dict[str, Any]:
    (only,) = pod()["spec"]["containers"]
    return only


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The ConfigMap's rankgate.yaml and routes.yaml as the pod sees them, with the
    image's model directory pointed at the repository's committed models."""
    data = load("configmap.yaml")["data"]
    (tmp_path / "rankgate.yaml").write_text(data["rankgate.yaml"])
    routes = data["routes.yaml"].replace(IMAGE_MODELS, str(ROOT / "models"))
    (tmp_path / "routes.yaml").write_text(routes)
    return load_settings(tmp_path / "rankgate.yaml")


def test_configmap_config_and_routes_load(settings: Settings) -> None:
    snapshot = build_snapshot(settings.routes_path, settings.embeddings.dim, 1, None)
    assert set(snapshot.models) == {"ranker_v1", "ranker_v2"}  # the sha256 pins hold
    assert settings.workers == 1  # one process per pod (the default counts node CPUs)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"COPY models/*.onnx {IMAGE_MODELS}/" in dockerfile


def test_ports_match_the_config(settings: Settings) -> None:
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    assert ports == {"http": settings.listen.port, "admin": settings.admin.port}
    assert settings.listen.host == "0.0.0.0" and settings.admin.host == "0.0.0.0"
    service = load("service.yaml")["spec"]
    assert [p["targetPort"] for p in service["ports"]] == ["http"]  # admin not exposed


def secret_env(name: str) -> dict[str, Any]:
    """The container's environment variable ``name``, which must come from a Secret."""
    (var,) = [e for e in container()["env"] if e["name"] == name]
    return dict(var["valueFrom"]["secretKeyRef"])


def test_admin_is_never_open_beyond_the_pod(settings: Settings) -> None:
    """Bound past the pod's loopback, /admin/* takes a token from a Secret (required:
    no Secret, no start); only health and metrics stay open for probes and scrapes."""
    admin = settings.admin
    if admin.host in ("127.0.0.1", "::1", "localhost"):
        return
    assert admin.token is None, "a token written in a ConfigMap is no secret"
    assert admin.token_env is not None, "admin on the pod's IP without a token"
    ref = secret_env(admin.token_env)
    assert ref["optional"] is False and ref["key"] and ref["name"]
    assert secret_env(settings.routes_redis.key_env)["name"] == ref["name"]
    assert not (DEPLOY / "secret.yaml").exists()  # never a committed token


async def test_the_configmaps_admin_refuses_without_the_token(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The admin app as the ConfigMap configures it, over a real socket: /admin/* is
    401 without the Secret's token, health and metrics answer for the kubelet."""
    from aiohttp import web

    from proxy.serve.metrics import Metrics
    from proxy.serve.runtime import ServingState
    from proxy.serve.server import admin_token
    from tests.support.common import fetch

    assert settings.admin.token_env is not None
    monkeypatch.setenv(settings.admin.token_env, "t" * 32)
    runner = web.AppRunner(
        build_admin_app(LocalAdmin(ServingState(), Metrics(), admin_token(settings)))
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        for path in ("/admin/routes", "/admin/reload"):
            status, _, _ = await fetch(f"http://127.0.0.1:{port}{path}", method="POST")
            assert status == 401, path
        status, _, _ = await fetch(f"http://127.0.0.1:{port}/healthz")
        assert status == 200
        status, _, _ = await fetch(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
    finally:
        await runner.cleanup()
    monkeypatch.delenv(settings.admin.token_env)
    with pytest.raises(ConfigError, match="RANKGATE_ADMIN_TOKEN is not set"):
        admin_token(settings)


def admin_paths(settings: Settings) -> set[str]:
    """The paths rankgate's admin listener routes (with /metrics)."""
    from proxy.serve.metrics import Metrics
    from proxy.serve.runtime import ServingState

    app = build_admin_app(LocalAdmin(ServingState(), Metrics(), settings.admin.token))
    return {route.resource.canonical for route in app.router.routes() if route.resource}


def test_probes_and_scrape_hit_what_rankgate_serves(settings: Settings) -> None:
    c = container()
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert c["startupProbe"]["httpGet"]["port"] == "admin"
    served = admin_paths(settings)
    assert {"/readyz", "/healthz", "/metrics"} <= served
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["path"] in served
    notes = pod()["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true"
    assert int(notes["prometheus.io/port"]) == settings.admin.port
    assert notes["prometheus.io/path"] in served


def test_termination_covers_prestop_and_drain(settings: Settings) -> None:
    command = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    grace = pod()["spec"]["terminationGracePeriodSeconds"]
    assert float(command[1]) + settings.shutdown_timeout_s < grace


def test_config_is_a_directory_mount(settings: Settings) -> None:
    args = container()["args"]
    config_path = Path(args[args.index("--config") + 1])
    mounts = {m["name"]: m for m in container()["volumeMounts"]}
    assert mounts["config"]["mountPath"] == str(config_path.parent)
    assert all("subPath" not in m for m in mounts.values())  # subPath never updates
    volumes = {v["name"]: v for v in pod()["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == load("configmap.yaml")["metadata"]["name"]
    assert settings.routes == "routes.yaml"  # next to rankgate.yaml in the same mount


def test_runs_as_the_images_user_read_only() -> None:
    uid = re.search(r"useradd .*--uid (\d+)", (ROOT / "Dockerfile").read_text())
    assert uid is not None
    security = pod()["spec"]["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] == int(uid.group(1))
    own = container()["securityContext"]
    assert own["readOnlyRootFilesystem"] and not own["allowPrivilegeEscalation"]
    assert own["capabilities"]["drop"] == ["ALL"]
    resources = container()["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]


def test_selectors_agree() -> None:
    labels = pod()["metadata"]["labels"]
    deployment = load("deployment.yaml")
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    assert load("service.yaml")["spec"]["selector"] == labels
    assert load("pdb.yaml")["spec"]["selector"]["matchLabels"] == labels
    target = load("hpa.yaml")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
