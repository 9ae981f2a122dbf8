"""The protocol check on headers a publisher sets: an eta is only a delay request (one too far
ahead is dropped, never a dead letter), no header of ours steers the worker, and a refused
message still names its envelope's event."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kombu.message import Message

from workers import outbox
from workers.edge import accept
from workers.errors import InvalidTaskMessageError
from workers.settings import CLOCK_SKEW_SECONDS, Settings

TASK = "imagegroups.stage_finished"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
DEFAULT_BOUND = timedelta(seconds=Settings().max_eta_seconds)


def _event() -> dict[str, Any]:
    return outbox.stage_finished(str(uuid.uuid4()), "deploy", "succeeded")


def _message(body: Any, **headers: Any) -> Message:
    base = {"lang": "py", "task": TASK, "id": str(uuid.uuid4()), "retries": 0, "eta": None}
    return Message(  # type: ignore[no-untyped-call]
        body=json.dumps(body).encode(),
        content_type="application/json",
        content_encoding="utf-8",
        headers=base | headers,
        properties={},
        accept=["application/json"],
    )


def _checked(message: Message, bound: timedelta = DEFAULT_BOUND) -> dict[str, Any]:
    accept.check(message, (TASK,), now=NOW, max_eta=bound)
    return dict(message.headers)


def test_the_eta_bound_is_the_longest_retry_plus_five_minutes_of_clock_skew() -> None:
    settings = Settings()
    assert CLOCK_SKEW_SECONDS == 300
    assert settings.max_eta_seconds == settings.retry_backoff_max + 300


def test_a_retry_from_a_host_whose_clock_is_90s_fast_keeps_its_eta() -> None:
    eta = (NOW + timedelta(seconds=45 + 90)).isoformat()
    headers = _checked(_message([[], {"event": _event()}, None], retries=1, eta=eta))
    assert headers["eta"] == eta


def test_an_eta_beyond_the_bound_is_dropped_with_a_warning_naming_the_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    event = _event()
    eta = (NOW + DEFAULT_BOUND + timedelta(seconds=1)).isoformat()
    message = _message([[], {"event": event}, None], eta=eta)
    with caplog.at_level(logging.WARNING, logger="workers.edge.accept"):
        headers = _checked(message)
    assert headers["eta"] is None, "the event runs now"
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert event["event_id"] in line and "runs now" in line


def test_a_naive_eta_is_read_as_utc() -> None:
    near = (NOW + timedelta(seconds=30)).replace(tzinfo=None).isoformat()
    far = (NOW + timedelta(hours=1)).replace(tzinfo=None).isoformat()
    body: list[Any] = [[], {"event": _event()}, None]
    assert _checked(_message(body, eta=near), timedelta(seconds=60))["eta"] == near
    assert _checked(_message(body, eta=far), timedelta(seconds=60))["eta"] is None


@pytest.mark.parametrize("eta", ["", "tomorrow", "2026-13-45T00:00:00"])
def test_an_eta_that_is_no_timestamp_is_still_refused(eta: str) -> None:
    with pytest.raises(InvalidTaskMessageError, match="header 'eta'"):
        _checked(_message([[], {"event": _event()}, None], eta=eta))


@pytest.mark.parametrize("forged", [987654321, True, -5, "7", None])
def test_a_replay_header_from_a_publisher_is_stripped_like_any_unknown_header(
    forged: object,
) -> None:
    headers = _checked(_message([[], {"event": _event()}, None], imagegroups_replay_of=forged))
    assert "imagegroups_replay_of" not in headers


def test_a_message_names_its_envelopes_event_id_in_canonical_form() -> None:
    event = _event()
    canonical = event["event_id"]
    event["event_id"] = canonical.upper()
    linked = {"callbacks": [{"task": "x"}], "errbacks": None, "chain": None, "chord": None}
    assert accept.message_event_id(_message([[], {"event": event}, linked])) == canonical
    assert accept.message_event_id(_message([[event], {}, None])) == canonical


@pytest.mark.parametrize(
    "body",
    [
        [[], {"event": {"event_id": "not-a-uuid"}}, None],
        [[], {"event": {"event_id": 7}}, None],
        [[], {"event": "text"}, None],
        [[], [], None],
        {"task": "protocol 1"},
        "just text",
    ],
)
def test_a_message_without_a_valid_envelope_names_no_event(body: Any) -> None:
    assert accept.message_event_id(_message(body)) is None


def test_an_undecodable_message_names_no_event() -> None:
    message = Message(  # type: ignore[no-untyped-call]
        body=b"\x80\x04pickle", content_type="application/x-python-serialize", accept=["json"]
    )
    assert accept.message_event_id(message) is None
