"""Fuzzing, in process: whatever a publisher puts on the wire ends in exactly one outcome.

Three layers, each checked against what the next one needs:
- a raw queue entry is screened so kombu can always build a message from it;
- a message passes the protocol check only if Celery can build its request and call the task;
- an envelope the task accepts is handled to an outcome, or refused with a permanent error.
"""

from __future__ import annotations

import base64
import inspect
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
from celery.worker.request import Request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu.message import Message
from kombu.transport.virtual.base import Base64
from kombu.transport.virtual.base import Message as VirtualMessage

from domain import DomainError, InvalidValueError
from persistence.memory import MemoryState, MemoryUnitOfWork
from workers.broker import transport
from workers.celery import app
from workers.edge import accept
from workers.edge.accept import MESSAGE_ERRORS, CatalogParsedEvent, StageFinishedEvent, parse
from workers.errors import InvalidEventError, InvalidTaskMessageError
from workers.handlers import Deps, handle_catalog_parsed, handle_stage_finished
from workers.messages import MALFORMED_HEADER
from workers.outbox import FollowOns, catalog_parsed, stage_finished

TASKS = ("imagegroups.catalog_parsed", "imagegroups.stage_finished")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
#: Seeded: the same examples every run, so CI is repeatable. For a longer hunt with new
#: examples each run: `IMAGEGROUPS_FUZZ_EXPLORE=1 pytest tests/unit/test_protocol_fuzz.py`.
FUZZ = settings(
    max_examples=500,
    deadline=None,
    derandomize=not os.environ.get("IMAGEGROUPS_FUZZ_EXPLORE"),
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
#: Header values: any JSON, and timestamps (for eta and expires) near and far.
header_values = (
    json_values
    | st.datetimes(timezones=st.just(UTC) | st.none()).map(lambda moment: moment.isoformat())
    | st.integers(-600, 600).map(lambda seconds: (NOW + timedelta(seconds=seconds)).isoformat())
)
header_keys = st.sampled_from(
    ["task", "id", "retries", "eta", "expires", "timelimit", "shadow", "root_id", "parent_id",
     "group", "group_index", "argsrepr", "kwargsrepr", "origin", "ignore_result", "lang",
     "stamps", "is_eager", "called_directly", "redelivered", "compression"]
) | st.text(max_size=10)  # fmt: skip


def valid_headers() -> dict[str, Any]:
    return {"lang": "py", "task": TASKS[1], "id": str(uuid.uuid4()), "retries": 0,
            "eta": None, "expires": None, "timelimit": [None, None], "root_id": None,
            "parent_id": None, "argsrepr": "()", "kwargsrepr": "{}", "origin": "x"}  # fmt: skip


def valid_body() -> list[Any]:
    event = stage_finished(str(uuid.uuid4()), "deploy", "succeeded")
    return [[], {"event": event}, {"callbacks": None, "errbacks": None, "chain": None}]


#: Keys that mean something to Celery in kwargs and embed, beside arbitrary ones.
body_keys = {
    "args": st.text(max_size=3),
    "kwargs": st.sampled_from(["event", "self", "task"]) | st.text(max_size=6),
    "embed": st.sampled_from(["callbacks", "errbacks", "chain", "chord", "is_eager"])
    | st.text(max_size=6),
}


def _headers(draw: st.DrawFn) -> dict[str, Any]:
    headers = valid_headers()
    for key, value in draw(st.lists(st.tuples(header_keys, header_values), min_size=1, max_size=4)):
        headers[key] = value
    for key in draw(st.lists(header_keys, max_size=2)):
        headers.pop(key, None)
    return headers


def _body(draw: st.DrawFn) -> Any:
    body: Any = valid_body()
    part = draw(st.sampled_from(["args", "kwargs", "embed", "whole", "event"]))
    if part == "whole":
        return draw(json_values)
    if part == "event":
        body[1] = {"event": draw(json_values)}
        return body
    index = {"args": 0, "kwargs": 1, "embed": 2}[part]
    shaped = st.dictionaries(body_keys[part], json_values, min_size=1, max_size=3)
    body[index] = draw(st.one_of(shaped, shaped, json_values))
    return body


CONTENT_TYPES = ["application/json", "application/x-python-serialize", "text/plain", "text/yaml"]
#: What one example varies; the rest of the message stays valid, so each check is reached.
LAYERS = ["headers", "schedule", "body", "encoding", "all"]


@st.composite
def messages(draw: st.DrawFn, layer: str) -> Message:
    vary = {layer} if layer != "all" else {"headers", "body", "encoding"}
    headers = _headers(draw) if "headers" in vary else valid_headers()
    if layer == "schedule":
        for key in ("eta", "expires"):
            headers[key] = draw(header_values)
    raw = json.dumps(_body(draw) if "body" in vary else valid_body()).encode()
    content_type, encoding = "application/json", "utf-8"
    if "encoding" in vary:
        raw = draw(st.just(raw) | st.binary(max_size=40))
        content_type = draw(
            st.sampled_from(
                [
                    "application/json",
                    "application/x-python-serialize",
                    "text/plain",
                    "application/x-yaml",
                ]
            )
        )
        encoding = draw(st.sampled_from(["utf-8", "binary", "rot13", "utf-16"]))
    return Message(  # type: ignore[no-untyped-call]
        body=raw,
        content_type=content_type,
        content_encoding=encoding,
        headers=headers,
        properties={},
        delivery_info={"exchange": "", "routing_key": "imagegroups.events"},
        accept=["application/json"],
    )


@FUZZ
@pytest.mark.parametrize("layer", LAYERS)
@given(data=st.data())
def test_a_message_passes_the_check_only_if_celery_can_build_its_request_and_call_the_task(
    layer: str, data: st.DataObject
) -> None:
    message = data.draw(messages(layer))
    try:
        accept.check(message, TASKS, now=NOW, max_eta=timedelta(seconds=240))
    except MESSAGE_ERRORS:
        return
    request = Request(message, app=app, task=app.tasks[message.headers["task"]], hostname="h")
    args, kwargs, embed = message.payload
    assert request.id == message.headers["id"] and not request.expires
    assert request.time_limits == (None, None), "a publisher's time limit must not reach Celery"
    assert not embed or not any(embed.values()), "no callback, errback, chain or chord"
    assert set(embed or {}) <= {"callbacks", "errbacks", "chain", "chord"}, "no foreign attribute"
    assert request.eta is None or request.eta <= NOW + timedelta(seconds=240), "held too long"
    retries = request.request_dict.get("retries", 0)
    assert isinstance(retries, int) and not isinstance(retries, bool) and retries >= 0
    # How Celery calls every task: its __call__(self, *args, **kwargs) must bind.
    inspect.signature(lambda self, *a, **k: None).bind(None, *args, **kwargs)


class _Channel:
    codecs: ClassVar[dict[str, Base64]] = {"base64": Base64()}

    def decode_body(self, body: Any, encoding: Any = None) -> Any:
        return self.codecs[encoding].decode(body) if encoding else body  # type: ignore[no-untyped-call]


def valid_entry() -> dict[str, Any]:
    body = base64.b64encode(json.dumps(valid_body()).encode()).decode()
    properties = {
        "delivery_tag": str(uuid.uuid4()),
        "body_encoding": "base64",
        "delivery_info": {"exchange": "", "routing_key": "imagegroups.events"},
        "priority": 0,
    }
    return {"body": body, "content-encoding": "utf-8", "content-type": "application/json",
            "headers": valid_headers(), "properties": properties}  # fmt: skip


entry_keys = st.sampled_from(
    ["body", "headers", "properties", "content-type", "content-encoding", "delivery_tag",
     "body_encoding", "delivery_info", "exchange", "routing_key"]
)  # fmt: skip


@st.composite
def entries(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["mutated"] * 8 + ["binary", "json"]))
    if kind == "binary":
        return draw(st.binary(max_size=60))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    entry = valid_entry()
    for key, value, drop in draw(
        st.lists(st.tuples(entry_keys, json_values, st.booleans()), max_size=3)
    ):
        properties = entry["properties"] if isinstance(entry.get("properties"), dict) else {}
        info = properties.get("delivery_info")
        target = (
            info if key in ("exchange", "routing_key") and isinstance(info, dict)
            else properties if key in ("delivery_tag", "body_encoding", "delivery_info")
            else entry
        )  # fmt: skip
        if drop:
            target.pop(key, None)
        else:
            target[key] = value
    return json.dumps(entry).encode()


@FUZZ
@given(entries())
def test_every_queue_entry_is_screened_into_one_kombu_can_build_a_message_from(raw: bytes) -> None:
    screened = transport.screen(raw, "imagegroups.events")
    readable = MALFORMED_HEADER not in screened["headers"]
    if readable:  # at most its address changed
        original = json.loads(raw)
        original["properties"]["delivery_info"] = screened["properties"]["delivery_info"]
        assert screened == original
    message = VirtualMessage(screened, channel=_Channel())  # type: ignore[no-untyped-call]
    if not readable:
        assert message.body == raw  # the entry itself is kept, for the dead letter
    # Wherever a publisher addressed it, its retry and redelivery come back to this queue.
    assert message.delivery_info["routing_key"] == "imagegroups.events"
    assert message.delivery_info["exchange"] in ("", "imagegroups.events")


events = st.one_of(
    st.builds(lambda j: catalog_parsed(j, "fuzz-group", ["compute"]), st.uuids().map(str)),
    st.builds(
        lambda j, stage, outcome, attempt: stage_finished(j, stage, outcome, attempt=attempt),
        st.sampled_from([str(uuid.UUID(int=1)), str(uuid.UUID(int=2))]),
        st.sampled_from(["build-image", "deploy", "pxe-boot", "restart", "validate", "reboot"]),
        st.sampled_from(["succeeded", "failed", "maybe"]),
        st.none() | st.integers(-1, 3),
    ),
)


@st.composite
def envelopes(draw: st.DrawFn) -> Any:
    event: Any = draw(events)
    for key, value in draw(st.lists(st.tuples(st.text(max_size=14), json_values), max_size=2)):
        # An earlier key may have replaced the payload itself with a non-object.
        into_payload = draw(st.booleans()) and isinstance(event["payload"], dict)
        target = event["payload"] if into_payload else event
        target[key] = value
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    return event


@FUZZ
@given(st.lists(envelopes(), min_size=1, max_size=6))
def test_every_envelope_ends_in_an_outcome_or_a_permanent_or_transient_refusal(
    sequence: list[Any],
) -> None:
    state = MemoryState()
    deps = Deps(
        new_uow=lambda: MemoryUnitOfWork(state, FollowOns()),
        clock=lambda: NOW,
        new_id=lambda: str(uuid.uuid4()),
    )
    for event in sequence:
        try:
            if isinstance(event, dict) and event.get("event_type") == "catalog.parsed":
                result = handle_catalog_parsed(
                    parse(CatalogParsedEvent, (), {"event": event}).to_command(), deps=deps
                )
            else:
                result = handle_stage_finished(
                    parse(StageFinishedEvent, (), {"event": event}).to_command(), deps=deps
                )
        except (InvalidEventError, DomainError, InvalidValueError):
            continue  # dead-lettered, or (not-yet-arrived catalog or group) retried
        assert result.outcome.outcome in {"applied", "duplicate", "stale"}


@pytest.mark.parametrize("headers", [["imagegroups.stage_finished"], "task", 7, True])
def test_headers_that_are_not_a_mapping_are_refused(headers: Any) -> None:
    message = Message(  # type: ignore[no-untyped-call]
        body=json.dumps(valid_body()).encode(), content_type="application/json"
    )
    message.headers = headers
    with pytest.raises(InvalidTaskMessageError, match="headers must be a mapping"):
        accept.check(message, TASKS, now=NOW, max_eta=timedelta(seconds=240))
