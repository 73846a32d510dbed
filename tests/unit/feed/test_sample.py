"""A route judged against a page as the feed path would (proxy/feed/sample.py): the
reason every request would get, or none when it would re-rank."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.feed.sample import SampleError, verdict
from proxy.routing.snapshot import CompiledRoute, build_snapshot
from tests.support.common import DIM, dot_model


@pytest.fixture
def route(tmp_path: Path) -> CompiledRoute:
    dot_model(tmp_path / "dot.onnx")
    (tmp_path / "routes.yaml").write_text(
        "models: {dot: {path: dot.onnx}}\n"
        "routes:\n"
        "  - {name: feed, match: {path: /feed}, model: dot, items: data.posts, item_id: pid}\n"
    )
    return build_snapshot(tmp_path / "routes.yaml", DIM, 1, None).routes[0]


@pytest.mark.parametrize(
    ("doc", "reason", "detail"),
    [
        (
            {"data": {"posts": [{"pid": 1}, {"x": 2}]}},
            None,
            "2 items at items: data.posts, 1 with an id",
        ),
        ({"data": {"items": [{"pid": 1}]}}, "items-not-found", "no array at items: data.posts"),
        ({"data": {"posts": {"pid": 1}}}, "items-not-found", "no array at items: data.posts"),
        ({"data": {"posts": []}}, "no-items", "the array at items: data.posts is empty"),
        ({"data": {"posts": [{"id": 1}]}}, "no-item-ids", "1 items at items: data.posts, none"),
    ],
)
def test_verdict_names_the_reason(
    route: CompiledRoute, doc: object, reason: str, detail: str
) -> None:
    found = verdict(route, doc)
    assert (found.reason, found.probed, found.never) == (reason, True, reason is not None)
    assert found.detail.startswith(detail)


def test_a_sample_error_carries_its_reason() -> None:
    assert SampleError("GET /x answered 404 Not Found; ... (reason=status)").reason == "status"
    assert SampleError("http://127.0.0.1:9: unreachable: connection refused").reason is None
