"""Round trips to PostgreSQL per event, counted on the wire, and the guarantees kept meanwhile."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, event, text

from bench.round_trips import EVENT_TYPES, measure
from domain import GroupNotCreatedError, OutboxMessage, StageName
from persistence.db import make_engine
from persistence.migrate import upgrade
from persistence.uow import SqlUnitOfWork
from tests.pg import fresh_database
from workers.edge.accept import CatalogParsedEvent, StageFinishedEvent, parse
from workers.handlers import Deps, handle_catalog_parsed, handle_stage_finished
from workers.outbox import FollowOns

pytestmark = pytest.mark.integration

#: What each event may cost: BEGIN travels with the inbox claim and the row lock, the writes
#: with the COMMIT. A new catalog's claim and reservation and a build result's new group go
#: with the COMMIT too, as plain INSERTs; one that conflicts fails the transaction, and the
#: event is handled again the long way (tests/integration/test_late_inserts.py): so a
#: duplicate catalog pays the failed try and the ROLLBACKs after it on top of the long way.
BUDGET = {
    "catalog.parsed": 1,
    "build-image succeeded": 2,
    "deploy succeeded": 2,
    "duplicate catalog.parsed": 5,
    "duplicate stage result": 2,
    "outbox sent marks": 1,
}
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with fresh_database("round_trips") as url:
        upgrade(url)
        yield url


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    engine = make_engine(url, pool_size=1)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def deps(engine: Engine) -> Deps:
    return Deps(
        new_uow=lambda: SqlUnitOfWork(engine, FollowOns()),
        clock=lambda: NOW,
        new_id=lambda: str(uuid.uuid4()),
        stage_timeouts=dict.fromkeys(StageName, timedelta(minutes=30)),
    )


def test_each_event_type_costs_no_more_round_trips_than_its_budget(url: str) -> None:
    counts = measure(url)
    assert set(counts) == set(EVENT_TYPES) == set(BUDGET)
    over = {name: (counts[name], BUDGET[name]) for name in BUDGET if counts[name] > BUDGET[name]}
    assert not over, f"(measured, budget) per event type: {over}"


def test_a_claim_sent_with_its_row_lock_is_rolled_back_when_the_event_fails(
    engine: Engine, deps: Deps
) -> None:
    event_id, job_id = str(uuid.uuid4()), str(uuid.uuid4())
    envelope = {
        "event_id": event_id,
        "event_type": "stage.finished",
        "schema_version": 1,
        "occurred_at": NOW.isoformat(),
        "job_id": job_id,
        "payload": {"stage": "deploy", "outcome": "succeeded"},
    }
    command = parse(StageFinishedEvent, (), {"event": envelope}).to_command()
    with pytest.raises(GroupNotCreatedError):
        handle_stage_finished(command, deps=deps)  # claimed, locked nothing, then refused
    with SqlUnitOfWork(engine) as uow:
        stored = uow.connection.scalar(
            text("SELECT count(*) FROM processed_events WHERE event_id = :e"), {"e": event_id}
        )
    assert stored == 0


def test_a_connection_goes_back_to_the_pool_as_the_engine_made_it(engine: Engine) -> None:
    with SqlUnitOfWork(engine) as uow:
        uow.inbox.claim(str(uuid.uuid4()), "imagegroups.stage_finished", "applied", NOW)
        uow.commit()
    with engine.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None and dbapi.autocommit is False
        conn.execute(text("CREATE TEMPORARY TABLE scratch (n int)"))
        conn.rollback()  # not autocommitted: the table goes with the rollback
        gone = conn.scalar(text("SELECT to_regclass('pg_temp.scratch') IS NULL"))
    assert gone is True


def test_the_sent_marks_are_one_prepared_statement_whatever_their_number(engine: Engine) -> None:
    messages = [_message(n) for n in range(21)]
    with SqlUnitOfWork(engine) as uow:
        for message in messages:
            uow.outbox.add(message)
        uow.commit()
    start = 0
    for size in range(1, 7):  # six batches of six sizes: psycopg prepares after five uses
        with SqlUnitOfWork(engine) as uow:
            uow.outbox.mark_sent([m.event_id for m in messages[start : start + size]], NOW)
            uow.commit()
        start += size
    with SqlUnitOfWork(engine) as uow:
        prepared = uow.connection.execute(
            text(
                "SELECT statement FROM pg_prepared_statements WHERE statement LIKE 'UPDATE outbox%'"
            )
        ).all()
        assert uow.outbox.pending() == (0, None)
    assert len(prepared) == 1, prepared


def _message(n: int) -> OutboxMessage:
    return OutboxMessage(
        event_id=str(uuid.uuid4()),
        task_name="pipeline.deploy",
        queue="pipeline.deploy",
        body={"n": n},
        image_group_id="marks-group",
        created_at=NOW,
    )


def test_a_group_s_events_reach_psycopg_without_sqlalchemy_executing_any_statement(
    engine: Engine, deps: Deps
) -> None:
    # The hot path's statements are compiled once and sent by psycopg in its pipeline
    # (persistence/db.py); SQLAlchemy's per-statement execution is what they skip.
    job_id, group_id = str(uuid.uuid4()), f"lean-{uuid.uuid4().hex[:8]}"

    catalog = {"image_group_id": group_id, "roles": ["compute", "login"], "catalog_name": "c"}
    built = {"stage": "build-image", "outcome": "succeeded", "image_group_id": group_id}
    executed: list[str] = []

    def on_execute(_conn: object, statement: object, *_args: object) -> None:
        executed.append(str(statement))

    event.listen(engine, "before_execute", on_execute)
    try:
        parsed = parse(
            CatalogParsedEvent, (), {"event": _envelope("catalog.parsed", job_id, catalog)}
        )
        reserved = handle_catalog_parsed(parsed.to_command(), deps=deps)
        result = parse(
            StageFinishedEvent, (), {"event": _envelope("stage.finished", job_id, built)}
        )
        done = handle_stage_finished(result.to_command(), deps=deps)
    finally:
        event.remove(engine, "before_execute", on_execute)
    assert reserved.outcome.as_dict()["outcome"] == "applied"
    assert done.outcome.as_dict()["outcome"] == "applied"
    assert [m.task_name for m in done.messages] == ["pipeline.deploy"]
    assert executed == []


def test_a_listener_sees_the_direct_writes_as_sqlalchemy_would_hand_them(
    engine: Engine, deps: Deps
) -> None:
    # bench/pg_capture.py replays what before_cursor_execute is handed: one row's parameters
    # for a single statement, the list of rows for an executemany.
    job_id, group_id = str(uuid.uuid4()), f"seen-{uuid.uuid4().hex[:8]}"
    catalog = {"image_group_id": group_id, "roles": ["compute", "login"], "catalog_name": "c"}
    built = {"stage": "build-image", "outcome": "succeeded", "image_group_id": group_id}
    parsed = parse(CatalogParsedEvent, (), {"event": _envelope("catalog.parsed", job_id, catalog)})
    handle_catalog_parsed(parsed.to_command(), deps=deps)
    seen: dict[str, tuple[object, bool]] = {}

    def record(*args: object) -> None:
        _conn, _cursor, statement, parameters, _context, many = args
        seen[" ".join(str(statement).split()[:3])] = (parameters, bool(many))

    event.listen(engine, "before_cursor_execute", record)
    try:
        result = parse(
            StageFinishedEvent, (), {"event": _envelope("stage.finished", job_id, built)}
        )
        handle_stage_finished(result.to_command(), deps=deps)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    images, many = seen["INSERT INTO images"]
    assert many is True and isinstance(images, list)
    assert sorted(row["role"] for row in images) == ["compute", "login"]
    outbox, many = seen["INSERT INTO outbox"]
    assert many is False and isinstance(outbox, dict) and outbox["queue"] == "pipeline.deploy"


def _envelope(event_type: str, job_id: str, payload: Mapping[str, object]) -> dict[str, object]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": NOW.isoformat(),
        "job_id": job_id,
        "payload": payload,
    }
