"""The transactional outbox on PostgreSQL: no send without commit, and nothing left unsent."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from domain import OutboxMessage
from persistence.db import make_engine
from persistence.migrate import upgrade
from persistence.models import OutboxRow, outbox_to_entity
from persistence.uow import SqlUnitOfWork, StoreUnitOfWork
from tests.integration.flow import follow_ons
from tests.integration.stack import redis_messages, stack, wait_for
from tests.pg import fresh_database
from workers.edge.accept import CatalogParsedEvent, StageFinishedEvent
from workers.handlers import Deps, handle_catalog_parsed, handle_stage_finished
from workers.outbox import FollowOns, OutboxRelay, catalog_parsed, stage_finished

pytestmark = pytest.mark.integration


class FakePublisher:
    def __init__(self, *, broken: bool = False) -> None:
        self.broken = broken
        self.sent: list[OutboxMessage] = []

    def publish(self, message: OutboxMessage) -> None:
        if self.broken:
            raise ConnectionError("broker unreachable")
        self.sent.append(message)


@pytest.fixture(scope="module")
def new_uow() -> Iterator[Callable[[], StoreUnitOfWork]]:
    with fresh_database("outbox") as url:
        upgrade(url)
        engine = make_engine(url)
        factory = engine
        yield lambda: SqlUnitOfWork(factory, FollowOns())
        engine.dispose()


def _outbox_of(new_uow: Callable[[], StoreUnitOfWork], group_id: str) -> list[OutboxMessage]:
    """The group's outbox rows (a test's own read, beside the repositories)."""
    with new_uow() as uow:
        assert isinstance(uow, SqlUnitOfWork)
        rows = uow.connection.execute(select(OutboxRow).where(OutboxRow.image_group_id == group_id))
        return [outbox_to_entity(row) for row in rows]


def _deps(new_uow: Callable[[], StoreUnitOfWork]) -> Deps:
    return Deps(new_uow=new_uow, clock=lambda: datetime.now(UTC), new_id=lambda: str(uuid.uuid4()))


def _build(deps: Deps, group_id: str) -> Any:
    job = str(uuid.uuid4())
    handle_catalog_parsed(
        CatalogParsedEvent.model_validate(catalog_parsed(job, group_id, ["compute"])).to_command(),
        deps=deps,
    )
    build = StageFinishedEvent.model_validate(
        stage_finished(job, "build-image", "succeeded")
    ).to_command()
    return handle_stage_finished(build, deps=deps)


class _FailingCommit:
    """A unit of work whose commit fails after every write was made."""

    def __init__(self, inner: StoreUnitOfWork) -> None:
        self.inner = inner

    def __enter__(self) -> Any:
        self.inner.__enter__()
        self.inner.commit = self._fail  # type: ignore[method-assign]
        return self.inner

    def __exit__(self, *exc: Any) -> None:
        self.inner.__exit__(*exc)

    def _fail(self) -> None:
        raise RuntimeError("commit failed")


def test_follow_on_is_not_sent_when_the_transaction_rolls_back(
    new_uow: Callable[[], StoreUnitOfWork],
) -> None:
    deps = _deps(new_uow)
    job = str(uuid.uuid4())
    handle_catalog_parsed(
        CatalogParsedEvent.model_validate(
            catalog_parsed(job, "rollback-1", ["compute"])
        ).to_command(),
        deps=deps,
    )
    failing = Deps(**{**deps.__dict__, "new_uow": lambda: _FailingCommit(new_uow())})
    publisher = FakePublisher()
    relay = OutboxRelay(new_uow, publisher, deps.clock)
    build = StageFinishedEvent.model_validate(
        stage_finished(job, "build-image", "succeeded")
    ).to_command()
    with pytest.raises(RuntimeError, match="commit failed"):
        relay.deliver(handle_stage_finished(build, deps=failing).messages)
    assert publisher.sent == []
    assert _outbox_of(new_uow, "rollback-1") == []
    with new_uow() as uow:
        assert uow.groups.find_by_job_id(job) is None
    while relay.sweep(grace=0):
        pass
    assert [m for m in publisher.sent if m.image_group_id == "rollback-1"] == []


def test_rows_left_unsent_by_a_failed_publish_are_sent_by_the_sweep(
    new_uow: Callable[[], StoreUnitOfWork],
) -> None:
    deps = _deps(new_uow)
    result = _build(deps, "sweep-1")
    broken = OutboxRelay(new_uow, FakePublisher(broken=True), deps.clock)
    assert broken.deliver(result.messages) == 0
    with new_uow() as uow:
        assert uow.outbox.pending()[0] >= 1

    publisher = FakePublisher()
    relay = OutboxRelay(new_uow, publisher, deps.clock)
    while relay.sweep(grace=0):
        pass
    assert [m.event_id for m in publisher.sent if m.image_group_id == "sweep-1"] == [
        result.messages[0].event_id
    ]
    assert all(m.sent_at is not None for m in _outbox_of(new_uow, "sweep-1"))
    assert relay.sweep(grace=0) == 0


def test_concurrent_sweeps_never_claim_the_same_row(new_uow: Callable[[], StoreUnitOfWork]) -> None:
    deps = _deps(new_uow)
    built = {_build(deps, f"skip-{i}").messages[0].event_id for i in range(12)}
    claims: list[list[str]] = []
    barrier = threading.Barrier(3)

    def claim() -> None:
        now = datetime.now(UTC)
        with new_uow() as uow:
            barrier.wait()
            rows = uow.outbox.claim_unsent(
                created_before=now + timedelta(seconds=1),
                lease_until=now + timedelta(minutes=1),
                now=now,
                limit=5,
            )
            uow.commit()
        claims.append([m.event_id for m in rows])

    threads = [threading.Thread(target=claim) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    claimed = [event_id for batch in claims for event_id in batch]
    assert len(claims) == 3
    assert len(claimed) == len(set(claimed)), "a row was claimed twice"
    assert set(claimed) <= built and len(claimed) >= 5


def test_a_running_worker_sweeps_committed_rows_that_were_never_published(
    tmp_path: Path,
) -> None:
    with stack(
        tmp_path,
        "sweeper",
        IMAGEGROUPS_OUTBOX_SWEEP_INTERVAL="0.2",
        IMAGEGROUPS_OUTBOX_SWEEP_GRACE="0",
    ) as s:
        # Committed as by a worker that died between commit and publish.
        result = _build(_deps(s.uow), "crashed-1")
        s.start_worker("--concurrency", "1")
        sent = wait_for(
            lambda: redis_messages(s.redis, "pipeline.deploy"), timeout=20, what="the sweep"
        )
        assert [m["headers"]["id"] for m in sent] == [result.messages[0].event_id]
        wait_for(
            lambda: all(m.sent_at for m in follow_ons(s, "crashed-1")),
            timeout=10,
            what="the row to be marked sent",
        )
