"""bench/pg_limit.py's replay values: fresh per event, the same for one event's two phases."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from psycopg.types.json import Jsonb

from bench.pg_limit import CAPTURE_GROUP, Binder, Captured, inserts, untag

JOB = "0b6a6f0e-1b8e-4a53-9f57-6a8c4c1f0c11"
CATALOG_EVENT = "8de564aa-90bb-4fc7-bdce-7522c49dfd3b"
BUILD_EVENT = "482ce88a-2346-4b1c-a5d8-9b4dfd7541d5"
IMAGE = "dabe0b70-f9ff-4880-b149-31c88633a5e6"
AT = {"$datetime": "2026-12-01T21:55:55.735666+00:00"}


def _statement(sql: str, **params: object) -> tuple[str, str]:
    return sql, json.dumps({"$dict": params})


CAPTURED = Captured(
    catalog=[
        _statement(
            "INSERT INTO processed_events (event_id) VALUES (%(event_id)s) ON CONFLICT DO NOTHING",
            event_id=CATALOG_EVENT,
        ),
        _statement(
            "INSERT INTO catalog_reservations (image_group_id, job_id) VALUES (%(g)s, %(j)s)",
            g=CAPTURE_GROUP,
            j=JOB,
        ),
    ],
    build=[
        _statement("SELECT 1 FROM catalog_reservations WHERE job_id = %(j)s FOR UPDATE", j=JOB),
        _statement(
            "INSERT INTO images (id, image_group_id) VALUES (%(id)s::UUID, %(g)s)",
            id={"$uuid": IMAGE},
            g=CAPTURE_GROUP,
        ),
        _statement(
            "INSERT INTO outbox (body, created_at) VALUES (%(body)s, %(at)s) "
            "ON CONFLICT (event_id) DO UPDATE SET body = excluded.body",
            body={"$jsonb": {"causation_id": BUILD_EVENT, "payload": {"id": CAPTURE_GROUP}}},
            at=AT,
        ),
    ],
)


def test_every_captured_uuid_and_the_group_id_are_replaced_in_every_statement() -> None:
    binder = Binder(CAPTURED, "n1")
    catalog, build = binder.bind(CAPTURED.catalog, 7), binder.bind(CAPTURED.build, 7)
    text = repr([params for _sql, params in catalog + build])
    for captured in (JOB, CATALOG_EVENT, BUILD_EVENT, IMAGE, CAPTURE_GROUP):
        assert captured not in text
    assert [sql for sql, _ in catalog + build] == [
        sql for sql, _ in CAPTURED.catalog + CAPTURED.build
    ]


def test_one_events_build_result_locks_the_catalog_row_its_catalog_event_wrote() -> None:
    binder = Binder(CAPTURED, "n1")
    catalog, build = binder.bind(CAPTURED.catalog, 3), binder.bind(CAPTURED.build, 3)
    assert build[0][1]["j"] == catalog[1][1]["j"]
    assert build[1][1]["g"] == catalog[1][1]["g"] == "pg-limit-n1-3"
    assert build[2][1]["body"].obj["payload"]["id"] == "pg-limit-n1-3"


def test_two_events_and_two_runs_get_different_values() -> None:
    first, other_run = Binder(CAPTURED, "n1"), Binder(CAPTURED, "n2")
    one, two = first.bind(CAPTURED.catalog, 1), first.bind(CAPTURED.catalog, 2)
    assert one[0][1]["event_id"] != two[0][1]["event_id"]
    assert one[0][1]["event_id"] != other_run.bind(CAPTURED.catalog, 1)[0][1]["event_id"]


def test_parameters_come_back_as_the_types_psycopg_was_handed() -> None:
    bound = Binder(CAPTURED, "n1").bind(CAPTURED.build, 0)
    assert isinstance(bound[1][1]["id"], uuid.UUID)
    assert isinstance(bound[2][1]["body"], Jsonb)
    assert bound[2][1]["at"] == datetime(2026, 12, 1, 21, 55, 55, 735666, tzinfo=UTC)
    assert untag({"$list": [1, {"$decimal": "1.5"}]})[1] * 2 == 3


def test_the_check_expects_exact_rows_for_inserts_and_at_least_one_per_event_for_upserts() -> None:
    rows, upserted = inserts(CAPTURED)
    assert rows == {"processed_events": 1, "catalog_reservations": 1, "images": 1, "outbox": 1}
    assert upserted == {"outbox"}
