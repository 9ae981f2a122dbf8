"""Every number and string of the published JSON Schemas is bounded as the column it lands in.

A field the schema allows but its column cannot hold turns a valid event into a database error
(a failed build-image with attempt 2**31 once did: the column is a 32-bit INTEGER). Each
integer and string of docs/events/*.schema.json is mapped below to the columns it is stored in
or compared with; a field without a mapping fails, so a new field has to be placed here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import JSON, BigInteger, Column, Integer, SmallInteger, String, Text

from persistence.models import Base
from workers.edge.accept import SCHEMAS

EVENTS_DIR = Path(__file__).resolve().parents[2] / "docs" / "events"
#: How a UUID is stored: str(UUID), whatever spelling the event used.
CANONICAL_UUID_LENGTH = 36
INTEGER_RANGES = {
    SmallInteger: (-(2**15), 2**15 - 1),
    BigInteger: (-(2**63), 2**63 - 1),
    Integer: (-(2**31), 2**31 - 1),
}


@dataclass(frozen=True)
class Unstored:
    """A field no column holds: it must still carry a bound of its own (or be a constant)."""

    why: str


Target = list["Column[Any]"] | Unstored


def _c(*names: str) -> list[Column[Any]]:
    """Columns by `table.column`, as persistence/models.py defines them."""
    tables = Base.metadata.tables
    found = []
    for name in names:
        table, column = name.split(".")
        assert column in tables[table].c, f"{name} is not a column: update this test's map"
        found.append(tables[table].c[column])
    return found


#: The envelope, the same in every schema.
ENVELOPE: dict[str, Target] = {
    "event_id": _c(
        "processed_events.event_id",
        "dead_letters.event_id",
        "transition_history.event_id",
        "stages.event_id",
        "outbox.event_id",
    ),
    "job_id": _c(
        "jobs.job_id",
        "image_groups.job_id",
        "stages.job_id",
        "catalog_reservations.job_id",
        "processed_events.job_id",
    ),
    "event_type": _c("transition_history.cause_event_type"),
    "schema_version": Unstored("a constant"),
    "occurred_at": Unstored("read by no one in the worker"),
    "correlation_id": Unstored("carried in the follow-on's JSON body"),
    "causation_id": _c("processed_events.causation_id"),
}
GROUP_ID = _c("image_groups.id", "catalog_reservations.image_group_id", "outbox.image_group_id")
ATTEMPT = _c("image_groups.attempt")
#: Each payload field, by `<schema>:<path>`.
PAYLOAD: dict[str, Target] = {
    "catalog.parsed:payload.image_group_id": GROUP_ID,
    "catalog.parsed:payload.roles[]": _c("images.role"),
    "catalog.parsed:payload.role_images{key}": _c("images.role"),
    "catalog.parsed:payload.role_images{value}": _c("images.image_name"),
    "catalog.parsed:payload.catalog_name": _c("catalog_reservations.catalog_name"),
    "catalog.parsed:payload.catalog_version": _c("catalog_reservations.catalog_version"),
    "stage.finished:payload.stage": _c("stages.stage", "transition_history.cause_stage"),
    "stage.finished:payload.outcome": _c("stages.state", "transition_history.cause_outcome"),
    "stage.finished:payload.image_group_id": GROUP_ID,
    "stage.finished:payload.attempt": ATTEMPT
    + _c("stages.attempt", "transition_history.cause_attempt"),
    "stage.finished:payload.request_event_id": _c(
        "stages.event_id", "processed_events.causation_id"
    ),
    "stage.finished:payload.error_code": _c(
        "stages.error_code", "transition_history.cause_error_code"
    ),
    "stage.finished:payload.error_summary": _c(
        "stages.error_summary", "transition_history.cause_error_summary"
    ),
    "stage.finished:payload.result_detail": _c("stages.result_detail"),
    "deploy.requested:payload.image_group_id": GROUP_ID,
    "deploy.requested:payload.attempt": ATTEMPT,
    "deploy.requested:payload.images[].role": _c("images.role"),
    "deploy.requested:payload.images[].image_name": _c("images.image_name"),
    "pxe_boot.requested:payload.image_group_id": GROUP_ID,
    "pxe_boot.requested:payload.attempt": ATTEMPT,
    "validate.requested:payload.image_group_id": GROUP_ID,
    "validate.requested:payload.attempt": ATTEMPT,
}


@dataclass(frozen=True)
class Leaf:
    schema: str
    path: str
    node: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.schema}:{self.path}"

    def target(self) -> Target | None:
        if self.path in ENVELOPE:
            return ENVELOPE[self.path]
        return PAYLOAD.get(self.key)


def _load(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(
        (EVENTS_DIR / f"{name}.schema.json").read_text(encoding="utf-8")
    )
    return schema


def _walk(root: dict[str, Any], node: dict[str, Any], path: str) -> Iterator[tuple[str, Any]]:
    """(path, node) for every integer, number, string and free-form object in a schema."""
    if "$ref" in node:
        node = root["$defs"][node["$ref"].removeprefix("#/$defs/")]
    for branch in node.get("anyOf", []):
        if branch != {"type": "null"}:
            yield from _walk(root, branch, path)
    kind = node.get("type")
    if kind in ("integer", "number", "string", "boolean"):
        yield path, node
    elif kind == "array":
        yield from _walk(root, node["items"], f"{path}[]")
    elif kind == "object":
        yield from _walk_object(root, node, path)


def _walk_object(root: dict[str, Any], node: dict[str, Any], path: str) -> Iterator[Any]:
    prefix = f"{path}." if path else ""
    for name, child in node.get("properties", {}).items():
        yield from _walk(root, child, f"{prefix}{name}")
    for child in node.get("patternProperties", {}).values():
        yield from _walk(root, child, f"{path}{{value}}")
    if "propertyNames" in node:
        yield from _walk(root, {"type": "string", **node["propertyNames"]}, f"{path}{{key}}")
    if node.get("additionalProperties") is True:
        yield path, node  # free-form JSON: bounded by its validator, stored as JSON


def leaves() -> list[Leaf]:
    found = []
    for name in sorted(SCHEMAS):
        root = _load(name)
        found += [Leaf(name, path, node) for path, node in _walk(root, root, "")]
    return found


def _stored_length(node: dict[str, Any]) -> int | None:
    """The longest text a valid value is stored as, or None when the schema has no bound."""
    if "const" in node:
        return len(str(node["const"]))
    if "enum" in node:
        return max(len(str(value)) for value in node["enum"])
    if "maxLength" not in node:
        return None
    if node.get("format") == "uuid":
        return CANONICAL_UUID_LENGTH
    return int(node["maxLength"])


def _integer_range(node: dict[str, Any]) -> tuple[int, int] | None:
    if "const" in node:
        return node["const"], node["const"]
    if "enum" in node:
        return min(node["enum"]), max(node["enum"])
    if "minimum" not in node or "maximum" not in node:
        return None
    return node["minimum"], node["maximum"]


def _column_range(column: Column[Any]) -> tuple[int, int]:
    for kind, bounds in INTEGER_RANGES.items():
        if isinstance(column.type, kind):
            return bounds
    raise AssertionError(f"{column} is not an integer column: {column.type!r}")


def problems(leaf: Leaf, target: Target) -> list[str]:
    """Why `leaf` can hold a value its columns cannot (empty when it is bounded as they are)."""
    kind = leaf.node.get("type")
    if kind == "integer":
        return _integer_problems(leaf, target)
    if kind == "string":
        return _string_problems(leaf, target)
    if kind == "object" and isinstance(target, list):
        return [f"{c} is not JSON" for c in target if not isinstance(c.type, JSON)]
    return [f"a {kind} field: teach this test its column's bounds"]


def _integer_problems(leaf: Leaf, target: Target) -> list[str]:
    bounds = _integer_range(leaf.node)
    if bounds is None:
        return ["an integer without both minimum and maximum"]
    if isinstance(target, Unstored):
        return []
    low, high = bounds
    out = []
    for column in target:
        column_low, column_high = _column_range(column)
        if low < column_low or high > column_high:
            out.append(f"[{low}, {high}] does not fit {column} [{column_low}, {column_high}]")
    return out


def _string_problems(leaf: Leaf, target: Target) -> list[str]:
    length = _stored_length(leaf.node)
    if isinstance(target, Unstored):
        return [] if length is not None else ["an unstored string without maxLength"]
    out = []
    for column in target:
        if isinstance(column.type, Text | JSON):
            continue  # unbounded on purpose (migration 0002): any length fits
        if not isinstance(column.type, String) or column.type.length is None:
            out.append(f"{column} is {column.type!r}: teach this test its bound")
        elif length is None:
            out.append(f"no maxLength, but {column} is VARCHAR({column.type.length})")
        elif length > column.type.length:
            out.append(f"{length} characters do not fit {column} ({column.type.length})")
    return out


ALL = leaves()


@pytest.mark.parametrize("leaf", ALL, ids=[leaf.key for leaf in ALL])
def test_every_schema_field_fits_every_column_it_is_stored_in(leaf: Leaf) -> None:
    target = leaf.target()
    assert target is not None, f"{leaf.key} is mapped to no column: add it to this test"
    assert problems(leaf, target) == []


def test_every_mapped_field_is_still_in_a_schema() -> None:
    keys = {leaf.key for leaf in ALL}
    paths = {leaf.path for leaf in ALL}
    assert sorted(set(PAYLOAD) - keys) == []
    assert sorted(set(ENVELOPE) - paths) == []


def test_the_walk_finds_the_fields_of_every_schema() -> None:
    # A walk that silently found nothing would pass everything above.
    assert {leaf.schema for leaf in ALL} == set(SCHEMAS)
    assert len(ALL) == 5 * len(ENVELOPE) + len(PAYLOAD)


@pytest.mark.parametrize(
    ("node", "target", "expected"),
    [
        ({"type": "integer", "minimum": 1}, _c("stages.attempt"), "without both"),
        ({"type": "integer", "minimum": 1, "maximum": 2**31}, _c("stages.attempt"), "fit"),
        ({"type": "string"}, _c("images.role"), "no maxLength"),
        ({"type": "string", "maxLength": 129}, _c("images.role"), "do not fit"),
        ({"type": "string", "enum": ["x" * 33]}, _c("stages.stage"), "do not fit"),
        ({"type": "string"}, Unstored("test"), "unstored string"),
        ({"type": "number"}, Unstored("test"), "teach this test"),
    ],
    ids=["no-maximum", "int32-overflow", "unbounded", "too-long", "long-enum", "unstored", "float"],
)
def test_the_check_refuses_a_field_wider_than_its_column(
    node: dict[str, Any], target: Target, expected: str
) -> None:
    found = problems(Leaf("x", "payload.x", node), target)
    assert found and expected in found[0]


def test_a_bounded_field_passes_and_text_columns_take_any_length() -> None:
    attempt = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
    assert problems(Leaf("x", "a", attempt), _c("stages.attempt")) == []
    assert problems(Leaf("x", "s", {"type": "string"}), _c("stages.error_summary")) == []
    uuid = {"type": "string", "format": "uuid", "maxLength": 45}
    assert problems(Leaf("x", "u", uuid), _c("jobs.job_id")) == []
