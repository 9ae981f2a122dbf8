"""A seeded fuzzer of raw broker messages: valid ones bent at the envelope, headers or body.

Each message carries a marker (its event id) in plain text wherever it ends up: the inbox
has it when the message was handled, a dead letter's stored body when it was refused.
"""

from __future__ import annotations

import base64
import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.faults.messages import EMBED, envelope, task_headers
from workers import outbox

CATALOG = "imagegroups.catalog_parsed"
HEADER_KEYS = [
    "task", "id", "retries", "eta", "expires", "timelimit", "shadow", "root_id", "parent_id",
    "group", "group_index", "argsrepr", "kwargsrepr", "origin", "ignore_result", "lang",
    "stamps", "is_eager", "x-trace",
]  # fmt: skip


@dataclass(frozen=True)
class Fuzzed:
    marker: str
    raw: bytes
    how: str


def json_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.choice(
        ["null", "bool", "int", "float", "text", "list", "dict"][: 7 if depth < 2 else 5]
    )
    if kind == "list":
        return [json_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if kind == "dict":
        return {_text(rng): json_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    return {
        "null": None,
        "bool": rng.random() < 0.5,
        "int": rng.choice([0, -1, 1, 7, 2**63]),
        "float": rng.choice([0.5, -1e300, 1e-9]),
        "text": _text(rng),
    }[kind]


def _text(rng: random.Random) -> str:
    return rng.choice(["", "x", "self", "event", "\x00", "é", "2999-01-01T00:00:00Z", "a" * 300])


def _bend_headers(rng: random.Random, headers: dict[str, Any]) -> str:
    key = rng.choice(HEADER_KEYS)
    if rng.random() < 0.3:
        headers.pop(key, None)
        return f"header {key} dropped"
    headers[key] = json_value(rng)
    return f"header {key} = {headers[key]!r:.40}"


def _bend_body(rng: random.Random, body: list[Any], marker: str) -> tuple[Any, str]:
    part = rng.choice(["args", "kwargs", "embed", "whole", "event"])
    value = json_value(rng)
    if part == "args":
        body[0] = value if rng.random() < 0.5 else [value]
    elif part == "kwargs":
        body[1] = {**body[1], rng.choice(["self", "task", "x", _text(rng)]): value}
    elif part == "embed":
        body[2] = {rng.choice(["callbacks", "chord", "is_eager", "x"]): value}
    elif part == "event":
        body[1]["event"]["payload"][_text(rng)] = value
    else:
        return [marker, value], "whole body replaced"
    return body, f"body {part} = {value!r:.40}"


def _bend_envelope(rng: random.Random, entry: dict[str, Any]) -> str:
    how = rng.choice(["properties", "delivery_tag", "body_encoding", "headers", "body", "type"])
    if how == "properties":
        entry["properties"] = {"correlation_id": entry["properties"]["correlation_id"]}
    elif how == "delivery_tag":
        entry["properties"]["delivery_tag"] = json_value(rng)
    elif how == "body_encoding":
        entry["properties"]["body_encoding"] = rng.choice(["rot13", None, 5])
    elif how == "headers":
        entry["headers"] = rng.choice([[1, 2], "headers", 3])
    elif how == "body":
        entry["body"] = rng.choice(["!!not base64!!", 12, None])
    else:
        entry["content-type"] = rng.choice(["application/x-python-serialize", "text/plain", 5])
    return f"envelope {how}"


def fuzz(rng: random.Random, new_event: Callable[[str], dict[str, Any]]) -> Fuzzed:
    """One message: valid, or bent at one layer; `new_event(marker)` makes its event."""
    marker = str(uuid.uuid4())
    event = new_event(marker)
    headers = task_headers(CATALOG, marker)
    body: Any = [[], {"event": event}, dict(EMBED)]
    layer = rng.choice(["valid", "headers", "headers", "body", "body", "envelope", "bytes"])
    how = "valid"
    if layer == "headers":
        how = _bend_headers(rng, headers)
    elif layer == "body":
        body, how = _bend_body(rng, body, marker)
    raw_body = json.dumps(body).encode()
    if layer == "bytes":
        raw_body, how = b"\xff\xfe not json " + marker.encode(), "body not JSON"
    entry = envelope(raw_body, headers, properties={"correlation_id": marker})
    if layer == "envelope":
        how = _bend_envelope(rng, entry)
    if layer == "envelope" and rng.random() < 0.2:
        return Fuzzed(marker, f"not an envelope {marker}".encode(), "entry not JSON")
    return Fuzzed(marker, json.dumps(entry).encode(), how)


def catalog_event(marker: str) -> dict[str, Any]:
    job = str(uuid.uuid4())
    return outbox.catalog_parsed(job, f"fuzz-{marker[:13]}", ["compute"], event_id=marker)


def decoded_body(raw: bytes) -> Any:
    """The task body of a well-formed entry (for a test's own checks)."""
    return json.loads(base64.b64decode(json.loads(raw)["body"]))
