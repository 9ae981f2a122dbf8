"""In-memory repositories that keep the same promises as the SQL ones (fakes, not mocks)."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import datetime
from types import TracebackType

from domain import (
    CatalogReservation,
    DuplicateImageGroupError,
    ImageGroup,
    ImageGroupId,
    ImageGroupMismatchError,
    ImageGroupStatus,
    Page,
    RowTaken,
)
from domain.ports import (
    CatalogRepository,
    ImageGroupRepository,
    InboxRepository,
    JobRepository,
    StageRepository,
)
from persistence import models
from persistence.memory_records import (
    MemoryDeadLetterRepository,
    MemoryDeliveryRepository,
    MemoryHistoryRepository,
    MemoryInboxRepository,
    MemoryJobRepository,
    MemoryOutboxRepository,
    MemoryStageRepository,
)
from persistence.memory_state import MemoryState
from persistence.memory_trace import MemoryTraceRepository
from persistence.uow import (
    DeadLetterRepository,
    DeliveryRepository,
    EventRecorder,
    FollowOn,
    HistoryRepository,
    OutboxRepository,
    SeenGroups,
    TraceRepository,
)

__all__ = ["MemoryState", "MemoryUnitOfWork"]


def _overdue(group: ImageGroup, now: datetime) -> bool:
    return group.deadline_at is not None and group.deadline_at <= now


def _stored(group: ImageGroup) -> ImageGroup:
    # Images come back ordered by role, as the SQL mapper returns them.
    images = tuple(sorted(group.images, key=lambda i: i.role.value))
    return replace(group, images=images, events=[])


class MemoryImageGroupRepository:
    def __init__(self, state: MemoryState) -> None:
        self.state = state

    def save(self, group: ImageGroup) -> None:
        held = self.state.groups.get(group.id.value)
        if held is not None:
            raise DuplicateImageGroupError(group.id.value, group.job_id, held.job_id)
        mine = self.find_by_job_id(group.job_id)
        if mine is not None:
            raise ImageGroupMismatchError(group.job_id, mine.id.value, group.id.value)
        self.state.groups[group.id.value] = _stored(group)

    def create(self, group: ImageGroup) -> None:
        self.save(group)  # nothing waits for a commit here

    def update_status(self, group: ImageGroup) -> None:
        stored = self.state.groups[group.id.value]
        self.state.groups[group.id.value] = replace(
            stored,
            status=group.status,
            attempt=group.attempt,
            updated_at=group.updated_at,
            deadline_at=group.deadline_at,
        )

    def find_by_id(self, group_id: ImageGroupId) -> ImageGroup | None:
        group = self.state.groups.get(group_id.value)
        return None if group is None else _stored(group)

    find_by_id_for_update = find_by_id

    def find_by_job_id(self, job_id: str) -> ImageGroup | None:
        for group in self.state.groups.values():
            if group.job_id == job_id:
                return _stored(group)
        return None

    # The unit of work holds one lock for its whole life, which is at least a row lock.
    find_by_job_id_for_update = find_by_job_id

    def list_by_status(
        self,
        status: ImageGroupStatus | None,
        *,
        limit: int,
        offset: int,
        overdue_at: datetime | None = None,
    ) -> Page[ImageGroup]:
        matching = [
            g
            for g in self.state.groups.values()
            if status in (None, g.status) and (overdue_at is None or _overdue(g, overdue_at))
        ]
        matching.sort(key=lambda g: (g.created_at, g.id.value), reverse=True)
        items = [_stored(g) for g in matching[offset : offset + limit]]
        return Page(items=items, total=len(matching), limit=limit, offset=offset)

    def claim_overdue(self, now: datetime, *, limit: int) -> list[ImageGroup]:
        # The unit of work's one lock stands in for the row locks (and SKIP LOCKED: no
        # other unit of work runs meanwhile, so there is nothing to skip).
        overdue = [g for g in self.state.groups.values() if _overdue(g, now)]
        overdue.sort(key=lambda g: (g.deadline_at, g.id.value))
        return [_stored(g) for g in overdue[:limit]]

    def exists(self, group_id: ImageGroupId) -> bool:
        return group_id.value in self.state.groups


class MemoryCatalogRepository:
    def __init__(self, state: MemoryState) -> None:
        self.state = state

    def reserve(self, reservation: CatalogReservation) -> CatalogReservation | None:
        holder = self.state.reservations.get(reservation.image_group_id.value)
        if holder is not None and holder.job_id != reservation.job_id:
            raise DuplicateImageGroupError(
                reservation.image_group_id.value, reservation.job_id, holder.job_id
            )
        if holder is not None:
            return holder
        mine = self.find_by_job_id(reservation.job_id)
        if mine is not None:
            raise ImageGroupMismatchError(
                reservation.job_id, mine.image_group_id.value, reservation.image_group_id.value
            )
        self.state.reservations[reservation.image_group_id.value] = models.storable_reservation(
            reservation
        )
        return None

    def reserve_late(self, reservation: CatalogReservation) -> None:
        taken = reservation.image_group_id.value in self.state.reservations
        if taken or self.find_by_job_id(reservation.job_id) is not None:
            raise RowTaken(f"a reservation holds {reservation.image_group_id.value!r} or its job")
        self.reserve(reservation)

    def find_by_job_id(self, job_id: str) -> CatalogReservation | None:
        for reservation in self.state.reservations.values():
            if reservation.job_id == job_id:
                return reservation
        return None

    find_by_job_id_for_update = find_by_job_id


class MemoryUnitOfWork:
    """Works on a private copy and swaps it in on commit; the store's lock (every unit on
    the same MemoryState holds it) makes it serialisable. The events of the groups it hands
    out become rows at commit, as in SqlUnitOfWork."""

    def __init__(self, state: MemoryState | None = None, follow_on: FollowOn | None = None) -> None:
        self.committed_state = state if state is not None else MemoryState()
        self.commits = 0
        self._recorder = EventRecorder(follow_on)
        self.follow_ons = self._recorder.stored

    def __enter__(self) -> MemoryUnitOfWork:
        self.committed_state.lock.acquire()
        self._begin()
        return self

    def _begin(self) -> None:
        # Reservations are immutable and hold a mappingproxy, which deepcopy cannot copy.
        shared = dict(self.committed_state.reservations)
        self.state = copy.deepcopy(replace(self.committed_state, reservations={}))
        self.state.reservations = shared
        self._recorder.forget()
        self.groups: ImageGroupRepository = SeenGroups(
            MemoryImageGroupRepository(self.state), self._recorder
        )
        self.catalogs: CatalogRepository = MemoryCatalogRepository(self.state)
        self.jobs: JobRepository = MemoryJobRepository(self.state)
        self.stages: StageRepository = MemoryStageRepository(self.state)
        self.history: HistoryRepository = MemoryHistoryRepository(self.state)
        self.inbox: InboxRepository = MemoryInboxRepository(self.state)
        self.outbox: OutboxRepository = MemoryOutboxRepository(self.state)
        self.deliveries: DeliveryRepository = MemoryDeliveryRepository(self.state)
        self.dead_letters: DeadLetterRepository = MemoryDeadLetterRepository(self.state)
        self.trace: TraceRepository = MemoryTraceRepository(self.state)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.committed_state.lock.release()

    def commit(self) -> None:
        self._recorder.store(self.history, self.outbox, self.stages)
        for name in vars(self.committed_state):
            setattr(self.committed_state, name, getattr(self.state, name))
        self.commits += 1
        self._begin()

    def rollback(self) -> None:
        self._begin()
