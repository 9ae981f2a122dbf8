"""Retention on PostgreSQL: what goes and what stays, and idempotency inside and past the window."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, insert, select

from domain import DeadLetter, DeadLetterStatus
from persistence.db import make_engine
from persistence.migrate import upgrade
from persistence.models import DeliveryRow, OutboxRow, ProcessedEventRow, TransitionRow
from persistence.retention import Cutoffs, prune
from persistence.uow import SqlUnitOfWork
from tests.integration.stack import stack, wait_for
from tests.pg import fresh_database
from workers import outbox
from workers.edge.accept import CatalogParsedEvent, StageFinishedEvent
from workers.handlers import Deps, Result, handle_catalog_parsed, handle_stage_finished
from workers.outbox import FollowOns

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture
def engine() -> Iterator[Engine]:
    with fresh_database("retention") as url:
        upgrade(url)
        engine = make_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


def _count(engine: Engine, model: type) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(model)) or 0)


def _letter(status: DeadLetterStatus, at: datetime) -> DeadLetter:
    return DeadLetter(None, "imagegroups.stage_finished", str(uuid.uuid4()), "[[], {}, {}]",
                      "application/json", "E", "e", None, 1, status, at, at)  # fmt: skip


def _seed(engine: Engine, now: datetime = T0) -> None:
    """Two of each kind of row: one 40 days old, one from `now`."""
    with engine.begin() as conn:
        for at in (now - 40 * DAY, now):
            conn.execute(
                insert(ProcessedEventRow).values(
                    event_id=str(uuid.uuid4()), task_name="t", outcome="applied", processed_at=at
                )
            )
            conn.execute(
                insert(DeliveryRow).values(
                    key=str(uuid.uuid4()), attempts=2, first_at=at, last_at=at
                )
            )
            for sent in (at, None):
                conn.execute(insert(OutboxRow).values(
                    event_id=str(uuid.uuid4()), task_name="pipeline.deploy",
                    queue="pipeline.deploy", body={}, image_group_id="g", created_at=at,
                    sent_at=sent))  # fmt: skip
    with SqlUnitOfWork(engine) as uow:
        for status in DeadLetterStatus:
            for at in (now - 40 * DAY, now):
                uow.dead_letters.add(_letter(status, at))
        uow.commit()


def test_prune_removes_only_old_bookkeeping_in_batches(engine: Engine) -> None:
    _seed(engine)
    cutoffs = Cutoffs(inbox=T0 - 7 * DAY, outbox=T0 - DAY, dead_letters=T0 - 30 * DAY)
    removed = prune(engine, cutoffs, batch=1)
    assert removed == {
        "processed_events": 1,
        "event_deliveries": 1,
        "outbox": 1,  # the old sent one; an unsent row waits for the sweep, however old
        "dead_letters": 2,  # the old replayed and discarded ones; a waiting letter stays
    }
    with SqlUnitOfWork(engine) as uow:
        left = [(d.status.value, d.last_failed_at) for d in uow.dead_letters.list()]
        assert uow.outbox.pending()[0] == 2
    assert sorted(left) == sorted(
        [("dead", T0 - 40 * DAY), ("dead", T0), ("replayed", T0), ("discarded", T0)]
    )
    assert prune(engine, cutoffs) == dict.fromkeys(removed, 0)


def _deps(engine: Engine, now: Callable[[], datetime]) -> Deps:
    return Deps(lambda: SqlUnitOfWork(engine, FollowOns()), now, lambda: str(uuid.uuid4()))


def _flow(job: str, group: str) -> list[dict[str, object]]:
    return [
        outbox.catalog_parsed(job, group, ["compute"]),
        outbox.stage_finished(job, "build-image", "succeeded"),
        outbox.stage_finished(job, "deploy", "succeeded", attempt=1),
    ]


def _handle(event: dict[str, object], deps: Deps) -> Result:
    if event["event_type"] == "catalog.parsed":
        return handle_catalog_parsed(
            CatalogParsedEvent.model_validate(event).to_command(), deps=deps
        )
    return handle_stage_finished(StageFinishedEvent.model_validate(event).to_command(), deps=deps)


@pytest.mark.parametrize(
    ("days_later", "expected"),
    [
        (1, ["duplicate", "duplicate", "duplicate"]),  # inside the window: the inbox knows
        (30, ["duplicate", "stale", "stale"]),  # past it: the state machine refuses
    ],
)
def test_an_event_delivered_again_is_never_applied_twice_inside_or_past_the_window(
    engine: Engine, days_later: int, expected: list[str]
) -> None:
    events = _flow(str(uuid.uuid4()), f"window-{days_later}")
    for event in events:
        assert _handle(event, _deps(engine, lambda: T0)).outcome.outcome == "applied"
    history = _count(engine, TransitionRow)
    later = T0 + days_later * DAY
    prune(engine, Cutoffs(inbox=later - 7 * DAY, outbox=later - DAY, dead_letters=later))
    again = [_handle(event, _deps(engine, lambda: later)).outcome.outcome for event in events]
    assert again == expected
    assert _count(engine, TransitionRow) == history, "no transition applied twice"


def test_a_running_worker_prunes_by_itself(tmp_path: Path) -> None:
    with stack(tmp_path, "prune", IMAGEGROUPS_RETENTION_INTERVAL="0.5") as s:
        _seed(s.engine, datetime.now(UTC))
        s.start_worker("--concurrency", "1")
        # Each table is pruned in a transaction of its own: wait for the pass to reach both.
        wait_for(
            lambda: (_count(s.engine, ProcessedEventRow), _count(s.engine, DeliveryRow)) == (1, 1),
            timeout=30,
            what="the old inbox and delivery rows to be pruned",
        )
        done = s.run_cli("prune", "--json")
        assert json.loads(done.stdout) == {
            "dead_letters": 0,
            "event_deliveries": 0,
            "outbox": 0,
            "processed_events": 0,
        }
