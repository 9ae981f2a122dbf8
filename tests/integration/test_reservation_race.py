"""Sixteen jobs claim one image group id at the same instant: PostgreSQL lets exactly one win."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text

from domain import (
    CatalogReservation,
    DuplicateImageGroupError,
    Image,
    ImageGroup,
    ImageGroupId,
    RoleName,
)
from persistence.db import make_engine
from persistence.migrate import upgrade
from persistence.uow import SqlUnitOfWork
from tests.pg import fresh_database

pytestmark = pytest.mark.integration

N = 16
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WAIT_LIMIT = 20.0


@dataclass(frozen=True)
class Database:
    engine: Engine
    sessions: Engine


@pytest.fixture(scope="module")
def db() -> Iterator[Database]:
    with fresh_database("race") as url:
        upgrade(url)
        engine = make_engine(url, pool_size=N)
        try:
            yield Database(engine, engine)
        finally:
            engine.dispose()


@dataclass
class Race:
    """What each contender came to: None for the winner, the refusal for everyone else."""

    jobs: list[str]
    outcomes: list[BaseException | None]

    def winner(self) -> str:
        won = [
            job for job, outcome in zip(self.jobs, self.outcomes, strict=True) if outcome is None
        ]
        assert len(won) == 1, f"{len(won)} contenders won"
        return won[0]

    def refusals(self) -> list[DuplicateImageGroupError]:
        refused = [o for o in self.outcomes if isinstance(o, DuplicateImageGroupError)]
        unexpected = [o for o in self.outcomes if o is not None and o not in refused]
        assert unexpected == [], f"unexpected errors: {unexpected!r}"
        return refused


def race(db: Database, attempt: Callable[[SqlUnitOfWork, str], None]) -> Race:
    """Every contender opens its own transaction, waits at the barrier, then attempts at once."""
    jobs = [str(uuid.uuid4()) for _ in range(N)]
    outcomes: list[BaseException | None] = [None] * N
    start_line = threading.Barrier(N)

    def contender(i: int) -> None:
        try:
            # Entering connects already, so all threads start from the line together.
            with SqlUnitOfWork(db.sessions) as uow:
                start_line.wait(WAIT_LIMIT)
                attempt(uow, jobs[i])
                uow.commit()
        except BaseException as error:
            outcomes[i] = error

    threads = [threading.Thread(target=contender, args=(i,), daemon=True) for i in range(N)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_LIMIT)
    assert not any(t.is_alive() for t in threads), "a contender never finished"
    return Race(jobs, outcomes)


def stored(db: Database, query: str, group_id: ImageGroupId) -> list[str]:
    with db.engine.connect() as conn:
        return sorted(str(v) for v in conn.execute(text(query), {"id": group_id.value}).scalars())


def test_sixteen_jobs_reserving_one_id_at_once_leave_exactly_one_holder(db: Database) -> None:
    group_id = ImageGroupId(f"race-{uuid.uuid4().hex[:12]}")

    def reserve(uow: SqlUnitOfWork, job_id: str) -> None:
        reservation = CatalogReservation(group_id, job_id, (RoleName("compute"),), created_at=T0)
        assert uow.catalogs.reserve(reservation) is None  # newly reserved

    result = race(db, reserve)
    winner = result.winner()
    refusals = result.refusals()
    assert len(refusals) == N - 1
    assert {r.held_by_job_id for r in refusals} == {winner}
    assert {r.image_group_id for r in refusals} == {group_id.value}
    holders = "SELECT job_id FROM catalog_reservations WHERE image_group_id = :id"
    assert stored(db, holders, group_id) == [winner]


def test_sixteen_jobs_creating_one_group_at_once_leave_exactly_one_group(db: Database) -> None:
    group_id = ImageGroupId(f"race-{uuid.uuid4().hex[:12]}")
    images_of: dict[str, list[str]] = {}

    def create(uow: SqlUnitOfWork, job_id: str) -> None:
        images = [Image(str(uuid.uuid4()), RoleName(r), f"{r}.img") for r in ("compute", "login")]
        images_of[job_id] = sorted(i.id for i in images)
        uow.groups.save(ImageGroup.create(group_id, job_id, images, event_id="ev", at=T0))

    result = race(db, create)
    winner = result.winner()
    refusals = result.refusals()
    assert len(refusals) == N - 1
    assert {r.held_by_job_id for r in refusals} == {winner}
    assert stored(db, "SELECT job_id FROM image_groups WHERE id = :id", group_id) == [winner]
    images = "SELECT id FROM images WHERE image_group_id = :id"
    assert stored(db, images, group_id) == images_of[winner]
