"""Screening keeps what a publisher may not choose out of a queue entry: where its retry and
its redelivery go, and headers kombu cannot mark as redelivered."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from workers.broker import transport
from workers.messages import MALFORMED_HEADER

QUEUE = "imagegroups.events"


def _entry(exchange: str, routing_key: str, headers: Any) -> dict[str, Any]:
    return {
        "body": base64.b64encode(b'[[], {"event": {}}, {}]').decode("ascii"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "delivery_info": {"exchange": exchange, "routing_key": routing_key},
            "body_encoding": "base64",
            "delivery_tag": "tag-1",
            "priority": 0,
        },
    }


@pytest.mark.parametrize(("exchange", "routing_key"), [("", QUEUE), (QUEUE, QUEUE)])
def test_an_entry_addressed_to_its_own_queue_passes_unchanged(
    exchange: str, routing_key: str
) -> None:
    entry = _entry(exchange, routing_key, {"task": "t", "id": "i"})
    assert transport.screen(json.dumps(entry).encode(), QUEUE) == entry


@pytest.mark.parametrize(
    ("exchange", "routing_key"), [("", "nowhere"), ("celeryev", QUEUE), ("x", "pipeline.deploy")]
)
def test_an_entry_addressed_elsewhere_is_readdressed_to_the_queue_it_came_from(
    exchange: str, routing_key: str
) -> None:
    entry = _entry(exchange, routing_key, {"task": "t", "id": "i"})
    screened = transport.screen(json.dumps(entry).encode(), QUEUE)
    assert screened["properties"]["delivery_info"] == {"exchange": "", "routing_key": QUEUE}
    assert screened["headers"] == entry["headers"] and screened["body"] == entry["body"]


@pytest.mark.parametrize("headers", [None, "text", ["task"]])
def test_an_entry_whose_headers_are_not_an_object_becomes_a_stand_in(headers: Any) -> None:
    raw = json.dumps(_entry("", QUEUE, headers)).encode()
    screened = transport.screen(raw, QUEUE)
    assert MALFORMED_HEADER in screened["headers"]
    assert "headers" in screened["headers"][MALFORMED_HEADER]
