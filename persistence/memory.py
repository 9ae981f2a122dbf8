"""In-memory repositories that keep the same promises as the SQL ones (fakes, not mocks)."""

from __future__ import annotations

import copy
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import TracebackType

from domain import (
    CatalogReservation,
    DeadLetter,
    DeadLetterStatus,
    DuplicateImageGroupError,
    ImageGroup,
    ImageGroupId,
    ImageGroupMismatchError,
    ImageGroupStatus,
    JobRecord,
    OutboxMessage,
    Page,
    StageRecord,
    StageState,
    Transition,
    latest_per_job,
)
from domain.ports import (
    CatalogRepository,
    DeadLetterRepository,
    DeliveryRepository,
    HistoryRepository,
    ImageGroupRepository,
    InboxRepository,
    JobRepository,
    OutboxRepository,
    StageRepository,
)
from persistence import storable


@dataclass
class MemoryState:
    groups: dict[str, ImageGroup] = field(default_factory=dict)
    reservations: dict[str, CatalogReservation] = field(default_factory=dict)
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    stages: dict[tuple[str, str], StageRecord] = field(default_factory=dict)
    history: list[Transition] = field(default_factory=list)
    inbox: dict[str, str] = field(default_factory=dict)
    outbox: dict[str, OutboxMessage] = field(default_factory=dict)
    leases: dict[str, datetime] = field(default_factory=dict)
    deliveries: dict[str, tuple[int, datetime]] = field(default_factory=dict)
    dead_letters: dict[int, DeadLetter] = field(default_factory=dict)


def _stored(group: ImageGroup) -> ImageGroup:
    # Images come back ordered by role, as the SQL mapper returns them.
    images = tuple(sorted(group.images, key=lambda i: i.role.value))
    return replace(group, images=images, new_transitions=[], new_requests=[])


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

    def update_status(self, group: ImageGroup) -> None:
        stored = self.state.groups[group.id.value]
        self.state.groups[group.id.value] = replace(
            stored, status=group.status, attempt=group.attempt, updated_at=group.updated_at
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
        self, status: ImageGroupStatus | None, *, limit: int, offset: int
    ) -> Page[ImageGroup]:
        matching = [g for g in self.state.groups.values() if status in (None, g.status)]
        matching.sort(key=lambda g: (g.created_at, g.id.value), reverse=True)
        items = [_stored(g) for g in matching[offset : offset + limit]]
        return Page(items=items, total=len(matching), limit=limit, offset=offset)

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
        self.state.reservations[reservation.image_group_id.value] = storable.reservation(
            reservation
        )
        return None

    def find_by_job_id(self, job_id: str) -> CatalogReservation | None:
        for reservation in self.state.reservations.values():
            if reservation.job_id == job_id:
                return reservation
        return None

    find_by_job_id_for_update = find_by_job_id


class MemoryJobRepository:
    def __init__(self, state: MemoryState) -> None:
        self.state = state

    def upsert(self, job: JobRecord, at: datetime) -> None:
        self.state.jobs[job.job_id] = job


class MemoryStageRepository:
    def __init__(self, state: MemoryState) -> None:
        self.state = state

    def upsert_many(self, records: Sequence[StageRecord]) -> None:
        for record in records:
            self.state.stages[(record.job_id, record.stage.value)] = storable.stage(record)

    def find(self, job_id: str) -> list[StageRecord]:
        found = [r for (job, _), r in self.state.stages.items() if job == job_id]
        return sorted(found, key=lambda r: r.updated_at)

    def latest_failures(self, job_ids: Sequence[str]) -> dict[str, StageRecord]:
        wanted = set(job_ids)
        return latest_per_job(
            r
            for (job, _), r in self.state.stages.items()
            if job in wanted and r.state is StageState.FAILED
        )


class MemoryHistoryRepository:
    def __init__(self, state: MemoryState) -> None:
        self.state = state

    def add(self, transitions: Sequence[Transition]) -> None:
        self.state.history.extend(transitions)

    def list_for_group(self, group_id: ImageGroupId) -> list[Transition]:
        return [t for t in self.state.history if t.image_group_id == group_id]


class MemoryInboxRepository:
    def __init__(self, state: MemoryState) -> None:
        self.state = state

    def claim(self, event_id: str, task_name: str, outcome: str, at: datetime) -> bool:
        if event_id in self.state.inbox:
            return False
        self.state.inbox[event_id] = outcome
        return True

    def set_outcome(self, event_id: str, outcome: str) -> None:
        self.state.inbox[event_id] = outcome

    def count_by_outcome(self) -> dict[str, int]:
        return dict(Counter(self.state.inbox.values()))


class MemoryOutboxRepository:
    def __init__(self, state: MemoryState) -> None:
        self.state = state

    def add(self, message: OutboxMessage) -> None:
        if message.event_id in self.state.outbox:
            raise ValueError(f"outbox already holds {message.event_id}")
        self.state.outbox[message.event_id] = message

    def claim_unsent(
        self, *, created_before: datetime, lease_until: datetime, now: datetime, limit: int
    ) -> list[OutboxMessage]:
        free = [
            m
            for m in self.state.outbox.values()
            if m.sent_at is None
            and m.created_at < created_before
            and self._lease_over(m.event_id, now)
        ]
        claimed = sorted(free, key=lambda m: m.created_at)[:limit]
        for message in claimed:
            self.state.leases[message.event_id] = lease_until
        return claimed

    def _lease_over(self, event_id: str, now: datetime) -> bool:
        # Strictly before now, as in SQL: a lease ending exactly now still holds.
        lease = self.state.leases.get(event_id)
        return lease is None or lease < now

    def mark_sent(self, event_ids: Sequence[str], at: datetime) -> None:
        for event_id in event_ids:
            self.state.outbox[event_id] = replace(self.state.outbox[event_id], sent_at=at)
            self.state.leases.pop(event_id, None)

    def pending(self) -> tuple[int, datetime | None]:
        unsent = [m.created_at for m in self.state.outbox.values() if m.sent_at is None]
        return len(unsent), min(unsent, default=None)


class MemoryDeliveryRepository:
    def __init__(self, state: MemoryState) -> None:
        self.state = state

    def record_delivery(self, key: str, at: datetime) -> int:
        count, first = self.state.deliveries.get(key, (0, at))
        self.state.deliveries[key] = (count + 1, first)
        return count + 1

    def first_counted_at(self, key: str) -> datetime | None:
        counted = self.state.deliveries.get(key)
        return None if counted is None else counted[1]

    def reset(self, key: str) -> None:
        self.state.deliveries.pop(key, None)


class MemoryDeadLetterRepository:
    def __init__(self, state: MemoryState) -> None:
        self.state = state

    def add(self, letter: DeadLetter) -> int:
        waiting = next(
            (
                held
                for held in self.state.dead_letters.values()
                if held.status is DeadLetterStatus.DEAD
                and letter.event_id is not None
                and (held.event_id, held.body) == (letter.event_id, letter.body)
            ),
            None,
        )
        if waiting is not None and waiting.id is not None:
            self.state.dead_letters[waiting.id] = replace(
                waiting,
                error_type=letter.error_type,
                error_message=letter.error_message,
                traceback=letter.traceback,
                attempts=letter.attempts,
                last_failed_at=letter.last_failed_at,
            )
            return waiting.id
        new_id = max(self.state.dead_letters, default=0) + 1
        self.state.dead_letters[new_id] = replace(letter, id=new_id)
        return new_id

    def get(self, letter_id: int) -> DeadLetter | None:
        return self.state.dead_letters.get(letter_id)

    def list(self, status: DeadLetterStatus | None = None) -> list[DeadLetter]:
        letters = sorted(self.state.dead_letters.values(), key=lambda d: d.id or 0)
        return [d for d in letters if status in (None, d.status)]

    def set_status(self, letter_id: int, status: DeadLetterStatus, at: datetime) -> None:
        letter = self.state.dead_letters[letter_id]
        replayed_at = at if status is DeadLetterStatus.REPLAYED else letter.replayed_at
        self.state.dead_letters[letter_id] = replace(letter, status=status, replayed_at=replayed_at)

    def count(self, status: DeadLetterStatus) -> int:
        return sum(1 for d in self.state.dead_letters.values() if d.status is status)


class MemoryUnitOfWork:
    """Works on a private copy and swaps it in on commit; one lock makes it serialisable."""

    _lock = threading.RLock()

    def __init__(self, state: MemoryState | None = None) -> None:
        self.committed_state = state if state is not None else MemoryState()
        self.commits = 0

    def __enter__(self) -> MemoryUnitOfWork:
        self._lock.acquire()
        self._begin()
        return self

    def _begin(self) -> None:
        # Reservations are immutable and hold a mappingproxy, which deepcopy cannot copy.
        shared = dict(self.committed_state.reservations)
        self.state = copy.deepcopy(replace(self.committed_state, reservations={}))
        self.state.reservations = shared
        self.groups: ImageGroupRepository = MemoryImageGroupRepository(self.state)
        self.catalogs: CatalogRepository = MemoryCatalogRepository(self.state)
        self.jobs: JobRepository = MemoryJobRepository(self.state)
        self.stages: StageRepository = MemoryStageRepository(self.state)
        self.history: HistoryRepository = MemoryHistoryRepository(self.state)
        self.inbox: InboxRepository = MemoryInboxRepository(self.state)
        self.outbox: OutboxRepository = MemoryOutboxRepository(self.state)
        self.deliveries: DeliveryRepository = MemoryDeliveryRepository(self.state)
        self.dead_letters: DeadLetterRepository = MemoryDeadLetterRepository(self.state)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._lock.release()

    def commit(self) -> None:
        for name in vars(self.committed_state):
            setattr(self.committed_state, name, getattr(self.state, name))
        self.commits += 1
        self._begin()

    def rollback(self) -> None:
        self._begin()
