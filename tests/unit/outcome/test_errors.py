"""The one list of reasons and the error tree: docs/reference/headers-and-reasons.md agrees
with it, each error class carries only its own reasons, third-party errors translate to the
right reason."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis.exceptions

from plugins.run import PluginFailure
from proxy.outcome.ending import Answered, ClientGone, OriginBrokeOff
from proxy.outcome.errors import (
    BodyError,
    ItemsError,
    ModelError,
    OriginError,
    Outcome,
    PluginError,
    RankgateError,
    Reason,
    RedisError,
    Skip,
    ending_table,
    from_plugin,
    from_redis,
    origin_table,
    reason_table,
)
from proxy.serve.metrics import _bounded

PAGE = Path(__file__).resolve().parents[3] / "docs" / "reference" / "headers-and-reasons.md"
REASONS = PAGE.read_text()


def block(name: str) -> str:
    found = re.search(rf"<!-- {name}:start -->\n(.*?)\n<!-- {name}:end -->", REASONS, re.S)
    assert found, f"{PAGE.name} lost its {name} table"
    return found.group(1)


def test_the_reference_tables_are_the_reasons() -> None:
    assert block("reasons") == reason_table()
    assert block("origin-reasons") == origin_table()
    assert block("ending-reasons") == ending_table()


def test_every_reason_belongs_to_exactly_one_class() -> None:
    classes = (
        Skip,
        BodyError,
        ItemsError,
        RedisError,
        ModelError,
        PluginError,
        OriginError,
        ClientGone,
        OriginBrokeOff,
        Answered,
    )
    owners = {r: [c.__name__ for c in classes if r in c.reasons] for r in Reason}
    # internal-error is the base class's own: anything unexpected.
    assert owners.pop(Reason.INTERNAL_ERROR) == []
    assert all(len(names) == 1 for names in owners.values()), owners


def test_a_class_refuses_a_reason_not_its_own() -> None:
    with pytest.raises(ValueError, match="BodyError cannot carry reason no-user"):
        BodyError(Reason.NO_USER)
    err = ItemsError(Reason.NO_ITEM_IDS)
    assert isinstance(err, RankgateError) and err.detail == Reason.NO_ITEM_IDS.description


def test_outcomes_and_origin_statuses() -> None:
    assert Reason.CONTROL.outcome is Outcome.CONTROL
    assert Reason.BUDGET.outcome is Outcome.SKIPPED
    assert Reason.ORIGIN_TIMEOUT.outcome is Outcome.ORIGIN_ERROR
    assert OriginError(Reason.ORIGIN_TIMEOUT).status == 504
    assert OriginError(Reason.ORIGIN_UNREACHABLE).response().status == 502


def test_reasons_are_metric_labels_as_they_are() -> None:
    for reason in Reason:
        assert _bounded(reason) == reason.value


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (redis.exceptions.TimeoutError("slow"), Reason.REDIS_TIMEOUT),
        (TimeoutError(), Reason.REDIS_TIMEOUT),
        (redis.exceptions.ConnectionError("refused"), Reason.REDIS_UNAVAILABLE),
        (ConnectionRefusedError(), Reason.REDIS_UNAVAILABLE),
        (redis.exceptions.ResponseError("WRONGTYPE"), Reason.REDIS_ERROR),
    ],
)
def test_redis_errors_translate(exc: BaseException, reason: Reason) -> None:
    err = from_redis(exc, plugin="filter")
    assert (err.reason, err.plugin) == (reason, "filter")


def test_plugin_failures_translate() -> None:
    over = from_plugin(PluginFailure("slow", None))
    assert isinstance(over, Skip) and (over.reason, over.plugin) == (Reason.BUDGET, "slow")
    its_redis = from_plugin(PluginFailure("filter", redis.exceptions.TimeoutError()))
    assert isinstance(its_redis, RedisError) and its_redis.reason is Reason.REDIS_TIMEOUT
    broken = from_plugin(PluginFailure("mine", KeyError("x")))
    assert isinstance(broken, PluginError) and broken.plugin == "mine"
