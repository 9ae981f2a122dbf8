"""Row locks on real PostgreSQL: two sessions in two threads, one waits for the other's commit."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

import psycopg.errors
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from domain import (
    CatalogReservation,
    Image,
    ImageGroup,
    ImageGroupId,
    ImageGroupStatus,
    RoleName,
    StageName,
)
from persistence.db import make_engine
from persistence.migrate import upgrade
from persistence.uow import SqlUnitOfWork
from tests.pg import fresh_database
from workers.outbox import FollowOns

pytestmark = pytest.mark.integration

T = TypeVar("T")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
#: How long the first session keeps its lock once the second is seen waiting for it.
HOLD_SECONDS = 0.3
WAIT_LIMIT = 10.0


@dataclass(frozen=True)
class Database:
    url: str
    engine: Engine
    sessions: Engine


@pytest.fixture(scope="module")
def db() -> Iterator[Database]:
    with fresh_database("rowlock") as url:
        upgrade(url)
        engine = make_engine(url, lock_timeout_ms=5000)
        try:
            yield Database(url, engine, engine)
        finally:
            engine.dispose()


@dataclass(frozen=True)
class Job:
    group_id: ImageGroupId
    job_id: str


@pytest.fixture
def job(db: Database) -> Job:
    """A committed reservation and group of a job of this test alone."""
    seeded = Job(ImageGroupId(f"group-{uuid.uuid4().hex[:12]}"), str(uuid.uuid4()))
    with SqlUnitOfWork(db.sessions, FollowOns()) as uow:
        uow.catalogs.reserve(reservation_of(seeded))
        uow.groups.save(new_group(seeded))
        uow.commit()
    return seeded


def reservation_of(job: Job) -> CatalogReservation:
    return CatalogReservation(job.group_id, job.job_id, (RoleName("compute"),), created_at=T0)


def new_group(job: Job) -> ImageGroup:
    images = [Image(str(uuid.uuid4()), RoleName("compute"), "compute.img")]
    return ImageGroup.create(job.group_id, job.job_id, images, event_id="ev-create", at=T0)


def start_deploy_under_lock(uow: SqlUnitOfWork, job: Job) -> None:
    group = uow.groups.find_by_job_id_for_update(job.job_id)
    assert group is not None and group.status is ImageGroupStatus.BUILT
    group.start(StageName.DEPLOY, event_id="ev-deploy", at=T0 + timedelta(minutes=1))
    uow.groups.update_status(group)


class InThread(Generic[T]):
    """One thread with its own unit of work; join() re-raises what the thread raised."""

    def __init__(self, target: Callable[[], T]) -> None:
        self.result: list[T] = []
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(target,), daemon=True)
        self.thread.start()

    def _run(self, target: Callable[[], T]) -> None:
        try:
            self.result.append(target())
        except BaseException as error:
            self.errors.append(error)

    def join(self) -> T:
        self.thread.join(WAIT_LIMIT)
        assert not self.thread.is_alive(), "the thread never finished"
        if self.errors:
            raise self.errors[0]
        return self.result[0]


@dataclass
class Timeline:
    a_locked: threading.Event
    b_asking: threading.Event
    release_a: threading.Event
    b_pid: int = 0
    a_commit_started: float = 0.0
    b_started: float = 0.0
    b_returned: float = 0.0


def holder(db: Database, timeline: Timeline, work: Callable[[SqlUnitOfWork], None]) -> None:
    """Thread A: take the lock in `work`, keep the transaction open until released, commit."""
    with SqlUnitOfWork(db.sessions, FollowOns()) as uow:
        work(uow)
        timeline.a_locked.set()
        assert timeline.release_a.wait(WAIT_LIMIT), "never released"
        timeline.a_commit_started = time.monotonic()
        uow.commit()


def waiter(db: Database, timeline: Timeline, work: Callable[[SqlUnitOfWork], T]) -> T:
    """Thread B: take the same lock in `work` (which must wait for A) and note when it got it."""
    with SqlUnitOfWork(db.sessions, FollowOns()) as uow:
        timeline.b_pid = uow.connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        timeline.b_asking.set()
        timeline.b_started = time.monotonic()
        seen = work(uow)
        timeline.b_returned = time.monotonic()
        return seen


def waits_on_lock(db: Database, pid: int) -> bool:
    with db.engine.connect() as conn:
        kind = conn.execute(
            text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
        ).scalar()
    return kind == "Lock"


def blocked_in_postgres(db: Database, timeline: Timeline) -> bool:
    """Observe (not assume) that B's backend is queued on a lock; False if B got through."""
    deadline = time.monotonic() + WAIT_LIMIT
    while time.monotonic() < deadline and timeline.b_returned == 0.0:
        if waits_on_lock(db, timeline.b_pid):
            return True
        time.sleep(0.01)
    return False


def contend(
    db: Database,
    hold: Callable[[SqlUnitOfWork], None],
    take: Callable[[SqlUnitOfWork], T],
) -> tuple[T, Timeline]:
    """A holds a lock; B asks for it, is seen blocked, A keeps it HOLD_SECONDS, then commits."""
    timeline = Timeline(threading.Event(), threading.Event(), threading.Event())
    a = InThread(lambda: holder(db, timeline, hold))
    assert timeline.a_locked.wait(WAIT_LIMIT)
    b = InThread(lambda: waiter(db, timeline, take))
    try:
        assert timeline.b_asking.wait(WAIT_LIMIT)
        assert blocked_in_postgres(db, timeline), "B never waited on a lock"
        time.sleep(HOLD_SECONDS)  # the hold period: A keeps its lock while B waits
        assert timeline.b_returned == 0.0, "B got the lock while A still held it"
    finally:
        timeline.release_a.set()
    a.join()
    return b.join(), timeline


def test_a_second_session_waits_for_the_group_row_lock_and_then_sees_the_new_status(
    db: Database, job: Job
) -> None:
    seen, timeline = contend(
        db,
        hold=lambda uow: start_deploy_under_lock(uow, job),
        take=lambda uow: uow.groups.find_by_job_id_for_update(job.job_id),
    )
    assert seen is not None and seen.status is ImageGroupStatus.DEPLOYING
    assert timeline.b_returned >= timeline.a_commit_started
    assert timeline.b_returned - timeline.b_started >= HOLD_SECONDS


def test_a_second_session_waits_for_the_reservation_row_lock_and_then_sees_the_group(
    db: Database,
) -> None:
    job = Job(ImageGroupId(f"group-{uuid.uuid4().hex[:12]}"), str(uuid.uuid4()))
    with SqlUnitOfWork(db.sessions, FollowOns()) as uow:
        uow.catalogs.reserve(reservation_of(job))
        uow.commit()

    def create_group(uow: SqlUnitOfWork) -> None:
        assert uow.catalogs.find_by_job_id_for_update(job.job_id) is not None
        uow.groups.save(new_group(job))

    def group_after_lock(uow: SqlUnitOfWork) -> ImageGroup | None:
        assert uow.catalogs.find_by_job_id_for_update(job.job_id) is not None
        return uow.groups.find_by_job_id(job.job_id)

    seen, timeline = contend(db, hold=create_group, take=group_after_lock)
    assert seen is not None and seen.id == job.group_id
    assert timeline.b_returned >= timeline.a_commit_started
    assert timeline.b_returned - timeline.b_started >= HOLD_SECONDS


def test_a_lock_taken_after_a_plain_read_sees_the_latest_committed_status(
    db: Database, job: Job
) -> None:
    with SqlUnitOfWork(db.sessions, FollowOns()) as reader:
        before = reader.groups.find_by_job_id(job.job_id)
        with SqlUnitOfWork(db.sessions, FollowOns()) as writer:
            start_deploy_under_lock(writer, job)
            writer.commit()
        locked = reader.groups.find_by_job_id_for_update(job.job_id)
    assert before is not None and before.status is ImageGroupStatus.BUILT
    assert locked is not None and locked.status is ImageGroupStatus.DEPLOYING


LOCKS: dict[str, Callable[[SqlUnitOfWork, str], object]] = {
    "group": lambda uow, job_id: uow.groups.find_by_job_id_for_update(job_id),
    "reservation": lambda uow, job_id: uow.catalogs.find_by_job_id_for_update(job_id),
}


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_a_lock_held_too_long_fails_with_lock_not_available_instead_of_hanging(
    db: Database, job: Job, lock: str
) -> None:
    impatient = make_engine(db.url, lock_timeout_ms=200)
    try:
        with SqlUnitOfWork(db.sessions, FollowOns()) as holding:
            assert LOCKS[lock](holding, job.job_id) is not None
            with SqlUnitOfWork(impatient) as other:
                started = time.monotonic()
                with pytest.raises(OperationalError) as refused:
                    LOCKS[lock](other, job.job_id)
                waited = time.monotonic() - started
            start_deploy_under_lock(holding, job)
            holding.commit()
    finally:
        impatient.dispose()
    assert isinstance(refused.value.orig, psycopg.errors.LockNotAvailable)
    assert 0.2 <= waited < 3.0
    with SqlUnitOfWork(db.sessions, FollowOns()) as uow:
        after = uow.groups.find_by_job_id(job.job_id)
    assert after is not None and after.status is ImageGroupStatus.DEPLOYING
