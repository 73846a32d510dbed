"""Hostile routes versions (issue: "the control plane cannot be turned against the
fleet"), each as the bytes of a routes.yaml, for tests that replay them against a real
rankgate process through the file and through Redis."""

from __future__ import annotations

import os
from pathlib import Path

ROUTE = "  - {name: feed, match: {path: /feed}, model: %s, budget_ms: 2000}\n"


def routes(model: str, path: str, extra_route: str = "", sha256: str | None = None) -> bytes:
    pin = "" if sha256 is None else f', sha256: "{sha256}"'
    return (
        f"models:\n  {model}: {{path: {path}{pin}}}\nroutes:\n" + ROUTE % model + extra_route
    ).encode()


EVIL_ROUTE = (
    '  - name: evil\n    match: {path: /evil}\n    model: dot\n    plugins: [{use: "this:X"}]\n'
)
GOOD_UP = routes("dot", "dot.onnx")  # i9 first
GOOD_DOWN = routes("neg", "neg.onnx")  # i0 first


def alias_bomb() -> bytes:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return ("\n".join(lines) + "\nmodels: {dot: {path: dot.onnx}}\nroutes: *i\n").encode()


def many_models(n: int = 20_000) -> bytes:
    body = "".join(f"  m{k}: {{path: dot.onnx}}\n" for k in range(n))
    return ("models:\n" + body + "routes:\n" + ROUTE % "m0").encode()


def comments(total: int = 30 * 1024 * 1024) -> bytes:
    """A valid routes file padded with comments to ``total`` bytes."""
    line = b"# " + b"x" * 97 + b"\n"
    return GOOD_DOWN + line * (total // len(line))


def random_model(path: Path, size: int = 200 * 1024 * 1024) -> Path:
    with path.open("wb") as fh:
        for _ in range(size // (8 << 20)):
            fh.write(os.urandom(8 << 20))
    return path


# name -> (routes bytes, a phrase the refusal says). Model paths resolve against the
# directory of the routes file (or of rankgate.yaml's routes: for a Redis version).
def hostile(tmp: Path) -> dict[str, tuple[bytes, str]]:
    return {
        "dev-zero": (routes("dot", "/dev/zero"), "not a regular file"),
        "use-this": (
            routes("dot", "dot.onnx", EVIL_ROUTE),
            "module 'this' is not an installed plugin",
        ),
        "30MB-comments": (comments(), "over routes_limits.max_bytes"),
        "20000-models": (many_models(), "over routes_limits.max_models"),
        "invalid-yaml": (b"routes: [\n  {name: x\n", "YAML syntax error"),
        "wrong-sha256": (routes("dot", "dot.onnx", sha256="ab" * 32), "sha256: mismatch"),
        "etc-passwd": (routes("dot", "/etc/passwd"), "models.dot"),
        "dot-dot-shadow": (routes("dot", "../../../../etc/shadow"), "models.dot"),
        "alias-bomb": (alias_bomb(), "routes"),
    }


ZEN = "Beautiful is better than ugly"  # what importing `this` prints
