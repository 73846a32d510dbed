"""Events' shape: what a POST body must hold before any token is looked at."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from proxy.config.settings import Events
from proxy.experiments.events import Refused, _record, parse
from proxy.experiments.tokens import Claims
from proxy.readout.served import stored_id


def test_one_event_or_an_array() -> None:
    one = {"id": "t", "item": "i1", "type": "click"}
    assert parse(b'{"id": "t", "item": "i1", "type": "click"}') == [one]
    many = parse(b'[{"id": "t", "item": 7, "type": "conversion", "value": 2.5}]')
    assert many[0]["item"] == 7 and many[0]["value"] == 2.5


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"nope", 400, "not JSON"),
        (b"[]", 422, "no events"),
        (b'"click"', 422, "want an object"),
        (b'{"item": "i", "type": "click"}', 422, "event.id: required"),
        (
            b'[{"id": "t", "item": "i", "type": "click"}, {"id": "t", "type": "click"}]',
            422,
            "events[1].item: required",
        ),
        (b'{"id": "t", "item": "i", "type": "view"}', 422, "click or conversion"),
        (b'{"id": "t", "item": true, "type": "click"}', 422, "string or an integer"),
        (b'{"id": "t", "item": "", "type": "click"}', 422, "1 to 2048"),
        (b'{"id": "t", "item": "i", "type": "click", "value": "9"}', 422, "finite number"),
        (b'{"id": "t", "item": "i", "type": "click", "value": 1e999}', 400, "not JSON"),
        (b'{"id": "t", "item": "i", "type": "conversion", "value": 1e308}', 422, "-1e+09 to 1e+09"),
        (b'{"id": "t", "item": "i", "type": "conversion", "value": -2e9}', 422, "finite number"),
        (b'{"id": "t", "item": "i", "type": "click", "user": "u"}', 422, "unknown field 'user'"),
    ],
)
def test_malformed_events_are_refused(body: bytes, status: int, message: str) -> None:
    with pytest.raises(Refused) as err:
        parse(body)
    assert err.value.status == status and message in err.value.message


def test_the_value_range_is_the_configured_one() -> None:
    cfg = Events(enabled=True, min_value=0, max_value=100)
    body = b'{"id": "t", "item": "i", "type": "conversion", "value": %s}'
    assert parse(body % b"100", cfg)[0]["value"] == 100
    for bad in (b"-0.5", b"100.01"):
        with pytest.raises(Refused) as err:
            parse(body % bad, cfg)
        assert err.value.status == 422 and "from 0 to 100" in err.value.message
    assert parse(body % b"-1e9")[0]["value"] == -1e9  # the default range: |value| <= 1e9


def test_a_range_the_readout_would_skip_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="1e15"):
        Events(max_value=1e16)


def test_long_item_ids_are_stored_hashed_as_the_exposure_stores_them() -> None:
    long_id = "https://example.com/item/" + "x" * 200
    record = _record(
        {"id": "t", "item": long_id, "type": "click"}, Claims("a" * 24, 1, "r", "arm"), 2
    )
    assert record["item"] == stored_id(long_id) and record["item"].startswith("sha256:")
    assert len(record["item"]) == 7 + 32 and record["v"] == 2
    assert (
        _record({"id": "t", "item": 42, "type": "click"}, Claims("a" * 24, 1, "r", "a"), 2)["item"]
        == "42"
    )
