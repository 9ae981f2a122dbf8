"""Rows sent to PostgreSQL with the COMMIT, and what happens when one of them conflicts.

A catalog's inbox claim and reservation, and a build result's new group, are plain INSERTs
there (no ON CONFLICT): one that meets a row already stored (the event claimed, the id or job
reserved, the group built) fails the transaction, nothing is written, and the event is handled
again the long way, one statement at a time, which tells which it was.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from domain import (
    DuplicateImageGroupError,
    Image,
    ImageGroup,
    ImageGroupId,
    ImageGroupMismatchError,
    RecordStageResult,
    RoleName,
    RowTaken,
    StageName,
)
from persistence import db, models
from persistence.db import make_engine
from persistence.migrate import upgrade
from persistence.uow import SqlUnitOfWork
from tests.pg import fresh_database
from workers import handlers
from workers.edge.accept import CatalogParsedEvent, StageFinishedEvent, parse
from workers.handlers import (
    Deps,
    EventOutcome,
    Result,
    handle_catalog_parsed,
    handle_stage_finished,
)
from workers.outbox import FollowOns

pytestmark = pytest.mark.integration

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with fresh_database("late_insert") as url:
        upgrade(url)
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


def _image() -> Image:
    return Image(str(uuid.uuid4()), RoleName("compute"), "compute.img")


def _envelope(event_type: str, job_id: str, payload: Mapping[str, object]) -> dict[str, object]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": NOW.isoformat(),
        "job_id": job_id,
        "payload": payload,
    }


class Tries:
    """The handler's tries at a stage result: whether each sent the group's INSERT late."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.late: list[bool] = []
        handle = handlers._stage_finished

        def counted(command: RecordStageResult, deps: Deps, *, late_insert: bool) -> Result:
            self.late.append(late_insert)
            return handle(command, deps, late_insert=late_insert)

        monkeypatch.setattr(handlers, "_stage_finished", counted)


def _built(job_id: str, group_id: str) -> RecordStageResult:
    built = {"stage": "build-image", "outcome": "succeeded", "image_group_id": group_id}
    envelope = _envelope("stage.finished", job_id, built)
    return parse(StageFinishedEvent, (), {"event": envelope}).to_command()


def _parsed(job_id: str, group_id: str, *, roles: tuple[str, ...] = ("compute",)) -> Any:
    catalog = {"image_group_id": group_id, "roles": list(roles), "catalog_name": "c"}
    envelope = _envelope("catalog.parsed", job_id, catalog)
    return parse(CatalogParsedEvent, (), {"event": envelope}).to_command()


def _catalog(job_id: str, group_id: str, deps: Deps) -> None:
    handle_catalog_parsed(_parsed(job_id, group_id), deps=deps)


class LongWays:
    """How often a catalog went the long way, after its late INSERTs found a row there."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        handle = handlers._catalog_parsed

        def counted(command: Any, deps: Deps) -> Result:
            self.count += 1
            return handle(command, deps)

        monkeypatch.setattr(handlers, "_catalog_parsed", counted)


def _row(engine: Engine, sql: str, **params: object) -> tuple[Any, ...] | None:
    with engine.connect() as conn:
        found = conn.execute(text(sql), params).first()
    return None if found is None else tuple(found)


def _inbox(engine: Engine, event_id: str) -> str | None:
    with engine.connect() as conn:
        outcome = conn.scalar(
            text("SELECT outcome FROM processed_events WHERE event_id = :e"), {"e": event_id}
        )
    return None if outcome is None else str(outcome)


def test_a_second_build_result_for_a_built_group_is_stale_after_its_late_insert_conflicts(
    engine: Engine, deps: Deps, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id, group_id = str(uuid.uuid4()), f"twice-{uuid.uuid4().hex[:8]}"
    _catalog(job_id, group_id, deps)
    first = handle_stage_finished(_built(job_id, group_id), deps=deps)
    tries = Tries(monkeypatch)
    second = _built(job_id, group_id)  # another event id: the inbox lets it through
    again = handle_stage_finished(second, deps=deps)
    assert first.outcome.outcome is EventOutcome.APPLIED
    assert tries.late == [True, False]  # the INSERT with the COMMIT conflicted, then save
    assert again.outcome.outcome is EventOutcome.STALE
    assert again.outcome.detail is not None and "already built" in again.outcome.detail
    assert again.messages == []  # no second deploy request
    assert _inbox(engine, second.ids.event_id) == "stale"
    with engine.connect() as conn:
        groups = conn.execute(
            text("SELECT id, status FROM image_groups WHERE job_id = :j"), {"j": job_id}
        ).all()
        images = conn.scalar(
            text("SELECT count(*) FROM images WHERE image_group_id = :g"), {"g": group_id}
        )
    assert [tuple(g) for g in groups] == [(group_id, "DEPLOYING")] and images == 1


def test_a_build_result_whose_group_id_another_job_holds_is_refused_and_writes_nothing(
    engine: Engine, deps: Deps, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder, job_id, group_id = str(uuid.uuid4()), str(uuid.uuid4()), f"held-{uuid.uuid4().hex[:8]}"
    with SqlUnitOfWork(engine) as uow:  # a group whose reservation is gone, under the id
        held = ImageGroup.create(ImageGroupId(group_id), holder, [_image()], event_id="e", at=NOW)
        uow.groups.save(held)
        uow.commit()
    _catalog(job_id, group_id, deps)
    tries = Tries(monkeypatch)
    built = _built(job_id, group_id)
    with pytest.raises(DuplicateImageGroupError) as refused:
        handle_stage_finished(built, deps=deps)
    assert tries.late == [True, False]
    assert (refused.value.job_id, refused.value.held_by_job_id) == (job_id, holder)
    assert _inbox(engine, built.ids.event_id) is None  # claimed and rolled back, twice
    with engine.connect() as conn:
        mine = conn.scalar(
            text("SELECT count(*) FROM image_groups WHERE job_id = :j"), {"j": job_id}
        )
        sent = conn.scalar(
            text("SELECT count(*) FROM outbox WHERE image_group_id = :g"), {"g": group_id}
        )
    assert (mine, sent) == (0, 0)


def test_a_late_group_insert_failing_for_another_reason_is_not_taken_for_a_conflict(
    engine: Engine,
) -> None:
    group = ImageGroup.create(ImageGroupId("no-status"), "j", [_image()], event_id="e", at=NOW)
    values = {**models.group_values(group), "status": None}  # NOT NULL, not a unique key
    with SqlUnitOfWork(engine) as uow:
        uow.connection.defer(db.INSERT_NEW_GROUP, values, taken=RowTaken)
        with pytest.raises(IntegrityError) as failed:
            uow.commit()
    assert not isinstance(failed.value, RowTaken)
    assert getattr(failed.value.orig, "sqlstate", None) == "23502"


def test_a_unique_key_taken_in_another_table_of_the_same_commit_is_not_taken_for_a_conflict(
    engine: Engine,
) -> None:
    event_id = str(uuid.uuid4())
    outbox: dict[str, Any] = {"event_id": event_id, "task_name": "t", "queue": "q", "body": {}}
    outbox |= {"image_group_id": "before-1", "created_at": NOW, "sent_at": None}
    with SqlUnitOfWork(engine) as uow:
        uow.connection.defer(db.INSERT_OUTBOX, outbox)
        uow.commit()
    # The group's INSERT alone would go through; the outbox row beside it repeats an event id.
    fresh = ImageGroup.create(ImageGroupId("fresh-1"), "jf", [_image()], event_id="f", at=NOW)
    with SqlUnitOfWork(engine) as uow:
        uow.groups.create(fresh)  # deferred with taken=RowTaken, for image_groups only
        uow.connection.defer(db.INSERT_OUTBOX, {**outbox, "image_group_id": "fresh-1"})
        with pytest.raises(IntegrityError) as failed:
            uow.commit()
    assert not isinstance(failed.value, RowTaken)
    assert getattr(failed.value.orig, "sqlstate", None) == "23505"
    assert _row(engine, "SELECT id FROM image_groups WHERE id = 'fresh-1'") is None


def test_a_new_catalog_takes_one_round_trip_and_is_stored_as_the_long_way_stores_it(
    engine: Engine, deps: Deps, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id, group_id = str(uuid.uuid4()), f"new-{uuid.uuid4().hex[:8]}"
    longer = LongWays(monkeypatch)
    command = _parsed(job_id, group_id)
    done = handle_catalog_parsed(command, deps=deps)
    assert longer.count == 0
    assert (done.outcome.outcome, done.outcome.image_group_id) == (EventOutcome.APPLIED, group_id)
    inbox = "SELECT outcome, task_name, job_id, deliveries, duplicates FROM processed_events"
    assert _row(engine, f"{inbox} WHERE event_id = :e", e=command.ids.event_id) == (
        "applied",
        "imagegroups.catalog_parsed",
        job_id,
        1,
        0,
    )
    reserved = "SELECT job_id, roles FROM catalog_reservations WHERE image_group_id = :g"
    assert _row(engine, reserved, g=group_id) == (job_id, ["compute"])
    assert _row(engine, "SELECT pipeline_phase FROM jobs WHERE job_id = :j", j=job_id) == ("BUILD",)


def test_a_catalog_delivered_again_goes_the_long_way_and_is_counted_once_as_a_duplicate(
    engine: Engine, deps: Deps, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id, group_id = str(uuid.uuid4()), f"again-{uuid.uuid4().hex[:8]}"
    command = _parsed(job_id, group_id)
    handle_catalog_parsed(command, deps=deps)
    longer = LongWays(monkeypatch)
    again = handle_catalog_parsed(command, deps=deps)  # the same event id
    assert longer.count == 1
    assert again.outcome.outcome is EventOutcome.DUPLICATE
    counted = "SELECT outcome, duplicates FROM processed_events WHERE event_id = :e"
    assert _row(engine, counted, e=command.ids.event_id) == ("applied", 1)


def test_a_late_insert_that_fails_warns_of_nothing_it_skipped(
    deps: Deps, caplog: pytest.LogCaptureFixture
) -> None:
    command = _parsed(str(uuid.uuid4()), f"quiet-{uuid.uuid4().hex[:8]}")
    handle_catalog_parsed(command, deps=deps)
    with caplog.at_level(logging.WARNING):
        again = handle_catalog_parsed(command, deps=deps)
    assert again.outcome.outcome is EventOutcome.DUPLICATE
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_the_same_catalog_under_a_new_event_id_is_a_duplicate_recorded_as_such(
    engine: Engine, deps: Deps, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id, group_id = str(uuid.uuid4()), f"same-{uuid.uuid4().hex[:8]}"
    handle_catalog_parsed(_parsed(job_id, group_id), deps=deps)
    longer = LongWays(monkeypatch)
    second = _parsed(job_id, group_id)
    again = handle_catalog_parsed(second, deps=deps)
    assert longer.count == 1
    assert (again.outcome.outcome, again.outcome.detail) == (
        EventOutcome.DUPLICATE,
        "already reserved",
    )
    assert _inbox(engine, second.ids.event_id) == "duplicate"


@pytest.mark.parametrize("clash", ["another job, the id", "the job, another id"])
def test_a_catalog_clashing_with_a_reservation_is_refused_as_before_and_writes_nothing(
    engine: Engine, deps: Deps, monkeypatch: pytest.MonkeyPatch, clash: str
) -> None:
    job_id, group_id = str(uuid.uuid4()), f"clash-{uuid.uuid4().hex[:8]}"
    handle_catalog_parsed(_parsed(job_id, group_id), deps=deps)
    longer = LongWays(monkeypatch)
    wanted: type[Exception]
    if clash == "another job, the id":
        other, wanted = _parsed(str(uuid.uuid4()), group_id), DuplicateImageGroupError
    else:
        other, wanted = _parsed(job_id, f"{group_id}-2"), ImageGroupMismatchError
    with pytest.raises(wanted):
        handle_catalog_parsed(other, deps=deps)
    assert longer.count == 1
    assert _inbox(engine, other.ids.event_id) is None
    reserved = "SELECT count(*) FROM catalog_reservations WHERE job_id = :j OR image_group_id = :g"
    assert _row(engine, reserved, j=other.ids.job_id, g=other.catalog.image_group_id.value) == (1,)
