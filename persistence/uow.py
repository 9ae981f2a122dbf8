"""The store's unit of work: its port, what it records at commit, and the SQL unit of work.

Ports beside the domain's: the worker's own records, which no handler writes.

The edge counts deliveries and stores dead letters, the outbox relay leases and marks the
follow-ons, the command line reads history and traces. A StoreUnitOfWork is the domain's
UnitOfWork with these too; SqlUnitOfWork and MemoryUnitOfWork are both.

What a unit of work stores at commit from the domain events its groups recorded.

The unit of work hands its groups out through SeenGroups, which remembers each one; at
commit, EventRecorder takes every event they recorded (and clears them) and writes it
through the unit of work's repositories, before the COMMIT and in this order: the history
rows, the outbox rows, then the stage rows in one statement (on PostgreSQL they all wait to
travel with the COMMIT: persistence/db.py). The wire body of a follow-on is not ours:
the worker hands the unit of work its FollowOn builder (workers/outbox.py).

The SQL unit of work: one connection, one transaction, committed only when asked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Protocol

from sqlalchemy import Engine

from domain import (
    DeadLetter,
    DeadLetterStatus,
    DomainEvent,
    ImageGroup,
    ImageGroupId,
    ImageGroupRepository,
    ImageGroupStatus,
    InboxRecord,
    OutboxMessage,
    Page,
    StageRecord,
    StageReported,
    StageRepository,
    StageRequested,
    StageState,
    StatusChanged,
    Transition,
    UnitOfWork,
)
from domain.ports import CatalogRepository, InboxRepository, JobRepository
from persistence.db import BatchingConnection
from persistence.repositories import (
    SqlCatalogRepository,
    SqlDeadLetterRepository,
    SqlDeliveryRepository,
    SqlHistoryRepository,
    SqlImageGroupRepository,
    SqlInboxRepository,
    SqlJobRepository,
    SqlOutboxRepository,
    SqlStageRepository,
    SqlTraceRepository,
)


class HistoryRepository(Protocol):
    def add(self, transitions: Sequence[Transition]) -> None: ...

    def list_for_group(self, group_id: ImageGroupId) -> list[Transition]: ...


class OutboxRepository(Protocol):
    def add(self, message: OutboxMessage) -> None: ...

    def claim_unsent(
        self, *, created_before: datetime, lease_until: datetime, now: datetime, limit: int
    ) -> list[OutboxMessage]:
        """Lease unsent rows nobody else holds (SKIP LOCKED) so several relays never collide."""

    def mark_sent(self, event_ids: Sequence[str], at: datetime) -> None: ...

    def pending(self) -> tuple[int, datetime | None]:
        """How many rows are unsent, and when the oldest was written."""


class DeliveryRepository(Protocol):
    def record_delivery(self, key: str, at: datetime, copy: str | None = None) -> int | None:
        """Count one more delivery of an event and return the count so far.

        `copy` names the message (its Celery task id): the first copy counted holds the
        event's retry chain, and a delivery of another copy is not counted (None)."""

    def chain_holder(self, key: str) -> str | None:
        """The copy whose deliveries are counted for the event, if one is."""

    def first_counted_at(self, key: str) -> datetime | None:
        """When the first counted (second) delivery came: just after the first failure."""

    def reset(self, key: str) -> None: ...


class DeadLetterRepository(Protocol):
    def add(self, letter: DeadLetter) -> int: ...

    def get(self, letter_id: int) -> DeadLetter | None: ...

    def list(self, status: DeadLetterStatus | None = None) -> list[DeadLetter]: ...

    def set_status(self, letter_id: int, status: DeadLetterStatus, at: datetime) -> None: ...

    def count(self, status: DeadLetterStatus) -> int: ...

    def replays_of(self, letter_id: int) -> Sequence[int]:
        """The letters stored when a replay of this one failed again (`replay_of` = it), by id."""
        ...

    def latest_replayed(self, event_id: str) -> int | None:
        """The id of the event's letter replayed last (by replayed_at, then id), if any."""
        ...


class TraceRepository(Protocol):
    """What `imagegroups trace` reads about one group: an operator's read, not the hot path."""

    def inbox(self, job_id: str, event_ids: Sequence[str]) -> list[InboxRecord]:
        """These events, and the job's events the history cannot name (any not applied, and
        its catalog), oldest first."""

    def follow_ons(
        self, group_id: ImageGroupId, written: Sequence[datetime]
    ) -> list[OutboxMessage]:
        """The group's outbox rows written at these times (its transitions' times)."""

    def dead_letters(self, job_id: str, event_ids: Sequence[str]) -> list[DeadLetter]:
        """Dead letters of these events, or whose body names the job, oldest first."""


class StoreUnitOfWork(UnitOfWork, Protocol):
    """The domain's unit of work with the worker's own records (one transaction as ever)."""

    history: HistoryRepository
    outbox: OutboxRepository
    deliveries: DeliveryRepository
    dead_letters: DeadLetterRepository
    trace: TraceRepository

    def __enter__(self) -> StoreUnitOfWork: ...


#: Builds the follow-on event that asks for a requested stage, as the outbox stores it.
FollowOn = Callable[[ImageGroup, StageRequested], OutboxMessage]


class NoFollowOns:
    """A unit of work given no builder: a stage request is a bug, said at the commit."""

    def __call__(self, group: ImageGroup, requested: StageRequested) -> OutboxMessage:
        raise RuntimeError(
            f"{group.id} requested {requested.stage}, but this unit of work was given no "
            "follow-on builder (workers.outbox.FollowOns)"
        )


@dataclass
class Rows:
    history: list[Transition] = field(default_factory=list)
    outbox: list[OutboxMessage] = field(default_factory=list)
    stages: list[StageRecord] = field(default_factory=list)


class EventRecorder:
    """The groups a unit of work saw since its last commit or rollback, and what their
    events became: `stored`, the follow-ons its commits wrote, in order."""

    def __init__(self, follow_on: FollowOn | None = None) -> None:
        self.follow_on: FollowOn = follow_on or NoFollowOns()
        self.seen: list[ImageGroup] = []
        self.stored: list[OutboxMessage] = []

    def see(self, group: ImageGroup) -> ImageGroup:
        if not any(seen is group for seen in self.seen):
            self.seen.append(group)
        return group

    def forget(self) -> None:
        self.seen.clear()

    def store(
        self, history: HistoryRepository, outbox: OutboxRepository, stages: StageRepository
    ) -> None:
        """Write the rows of every event recorded since; called just before the COMMIT."""
        rows = Rows()
        for group in self.seen:
            events, group.events = group.events, []
            for event in events:
                self._add(rows, group, event)
        self.seen.clear()
        history.add(rows.history)
        for message in rows.outbox:
            outbox.add(message)
        stages.upsert_many(rows.stages)
        self.stored.extend(rows.outbox)

    def _add(self, rows: Rows, group: ImageGroup, event: DomainEvent) -> None:
        if isinstance(event, StatusChanged):
            rows.history.append(event.transition)
        elif isinstance(event, StageRequested):
            message = self.follow_on(group, event)
            rows.outbox.append(message)
            rows.stages.append(_requested(group, event, message))
        elif isinstance(event, StageReported):
            rows.stages.append(_result(group, event))


def _requested(group: ImageGroup, event: StageRequested, message: OutboxMessage) -> StageRecord:
    """The stage's row names the request (a result that answers another one is stale)."""
    return StageRecord(
        job_id=group.job_id,
        stage=event.stage,
        state=StageState.REQUESTED,
        attempt=event.attempt,
        event_id=message.event_id,
        updated_at=event.at,
    )


def _result(group: ImageGroup, event: StageReported) -> StageRecord:
    return StageRecord(
        job_id=group.job_id,
        stage=event.stage,
        state=StageState(event.outcome.value),
        attempt=event.attempt,
        event_id=event.event_id,
        updated_at=event.at,
        result_detail=event.detail,
        error_code=event.error_code,
        error_summary=event.error_summary,
    )


class SeenGroups:
    """The unit of work's group repository: every group it hands out or is given is seen,
    so its events are stored at commit."""

    def __init__(self, groups: ImageGroupRepository, recorder: EventRecorder) -> None:
        self._groups = groups
        self._see = recorder.see

    def save(self, group: ImageGroup) -> None:
        self._groups.save(group)
        self._see(group)

    def create(self, group: ImageGroup) -> None:
        self._groups.create(group)
        self._see(group)

    def update_status(self, group: ImageGroup) -> None:
        self._groups.update_status(self._see(group))

    def find_by_id(self, group_id: ImageGroupId) -> ImageGroup | None:
        return self._seen(self._groups.find_by_id(group_id))

    def find_by_job_id(self, job_id: str) -> ImageGroup | None:
        return self._seen(self._groups.find_by_job_id(job_id))

    def find_by_job_id_for_update(self, job_id: str) -> ImageGroup | None:
        return self._seen(self._groups.find_by_job_id_for_update(job_id))

    def find_by_id_for_update(self, group_id: ImageGroupId) -> ImageGroup | None:
        return self._seen(self._groups.find_by_id_for_update(group_id))

    def list_by_status(
        self,
        status: ImageGroupStatus | None,
        *,
        limit: int,
        offset: int,
        overdue_at: datetime | None = None,
    ) -> Page[ImageGroup]:
        page = self._groups.list_by_status(
            status, limit=limit, offset=offset, overdue_at=overdue_at
        )
        self._all_seen(page.items)
        return page

    def claim_overdue(self, now: datetime, *, limit: int) -> list[ImageGroup]:
        claimed = self._groups.claim_overdue(now, limit=limit)
        self._all_seen(claimed)
        return claimed

    def exists(self, group_id: ImageGroupId) -> bool:
        return self._groups.exists(group_id)

    def _seen(self, group: ImageGroup | None) -> ImageGroup | None:
        return None if group is None else self._see(group)

    def _all_seen(self, groups: Sequence[ImageGroup]) -> None:
        for group in groups:
            self._see(group)


class SqlUnitOfWork:
    """Repositories run Core statements on one Connection: the ORM session's unit-of-work
    machinery is not needed (rows are mapped to entities explicitly) and costs time per event.
    The events of the groups it hands out become rows at commit (persistence/uow.py),
    their follow-ons built by `follow_on`.
    """

    def __init__(self, engine: Engine, follow_on: FollowOn | None = None) -> None:
        self.engine = engine
        self._recorder = EventRecorder(follow_on)
        self.follow_ons = self._recorder.stored

    def __enter__(self) -> SqlUnitOfWork:
        self.connection = conn = BatchingConnection(self.engine.connect())
        self.groups: ImageGroupRepository = SeenGroups(
            SqlImageGroupRepository(conn), self._recorder
        )
        self.catalogs: CatalogRepository = SqlCatalogRepository(conn)
        self.jobs: JobRepository = SqlJobRepository(conn)
        self.stages: StageRepository = SqlStageRepository(conn)
        self.history: HistoryRepository = SqlHistoryRepository(conn)
        self.inbox: InboxRepository = SqlInboxRepository(conn)
        self.outbox: OutboxRepository = SqlOutboxRepository(conn)
        self.deliveries: DeliveryRepository = SqlDeliveryRepository(conn)
        self.dead_letters: DeadLetterRepository = SqlDeadLetterRepository(conn)
        self.trace: TraceRepository = SqlTraceRepository(conn)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Whatever was not committed is rolled back; close() returns the connection even
        # when the rollback fails on a dead connection.
        try:
            self.connection.rollback()
        finally:
            self.connection.close()

    def commit(self) -> None:
        self._recorder.store(self.history, self.outbox, self.stages)
        self.connection.commit()

    def rollback(self) -> None:
        self._recorder.forget()
        self.connection.rollback()
