"""Events' shape: what a POST body must hold before any token is looked at."""

from __future__ import annotations

import pytest

from proxy.experiments.events import Refused, parse


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
        (b'{"id": "t", "item": "", "type": "click"}', 422, "1 to 256"),
        (b'{"id": "t", "item": "i", "type": "click", "value": "9"}', 422, "finite number"),
        (b'{"id": "t", "item": "i", "type": "click", "value": 1e999}', 400, "not JSON"),
        (b'{"id": "t", "item": "i", "type": "click", "user": "u"}', 422, "unknown field 'user'"),
    ],
)
def test_malformed_events_are_refused(body: bytes, status: int, message: str) -> None:
    with pytest.raises(Refused) as err:
        parse(body)
    assert err.value.status == status and message in err.value.message
