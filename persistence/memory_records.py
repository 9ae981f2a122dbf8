"""In-memory repositories for the worker's own records: jobs, stages, inbox, outbox, deliveries,
dead letters (fakes with the SQL ones' promises; see persistence/memory.py)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

from domain import (
    DeadLetter,
    DeadLetterStatus,
    ImageGroupId,
    InboxRecord,
    InboxRepository,
    JobRecord,
    OutboxMessage,
    RowTaken,
    StageRecord,
    StageState,
    Transition,
    latest_per_job,
)
from persistence import models
from persistence.memory_state import MemoryState


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
            self.state.stages[(record.job_id, record.stage.value)] = models.storable_stage(record)

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
        self.state.history.extend(models.storable_transition(t) for t in transitions)

    def list_for_group(self, group_id: ImageGroupId) -> list[Transition]:
        return [t for t in self.state.history if t.image_group_id == group_id]


class MemoryInboxRepository(InboxRepository):
    def __init__(self, state: MemoryState) -> None:
        self.state = state

    def claim_later(self, record: InboxRecord) -> Callable[[], bool]:
        held = self.state.inbox_records.get(record.event_id)
        if record.event_id in self.state.inbox:
            if held is not None:
                deliveries = max(held.deliveries + 1, record.deliveries)
                self.state.inbox_records[record.event_id] = replace(
                    held, deliveries=deliveries, duplicates=held.duplicates + 1
                )
            return lambda: False
        self.state.inbox[record.event_id] = record.outcome
        self.state.inbox_records[record.event_id] = record
        return lambda: True

    def claim_late(self, record: InboxRecord) -> None:
        if record.event_id in self.state.inbox:
            raise RowTaken(f"event {record.event_id} is in the inbox")
        self.claim_later(record)

    def set_outcome(self, event_id: str, outcome: str) -> None:
        self.state.inbox[event_id] = outcome
        held = self.state.inbox_records.get(event_id)
        if held is not None:
            self.state.inbox_records[event_id] = replace(held, outcome=outcome)

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

    def record_delivery(self, key: str, at: datetime, copy: str | None = None) -> int | None:
        count, first, holder = self.state.deliveries.get(key, (0, at, None))
        if copy is not None and holder not in (None, copy):
            return None
        self.state.deliveries[key] = (count + 1, first, copy if holder is None else holder)
        return count + 1

    def chain_holder(self, key: str) -> str | None:
        counted = self.state.deliveries.get(key)
        return None if counted is None else counted[2]

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

    def replays_of(self, letter_id: int) -> Sequence[int]:
        return sorted(
            d.id
            for d in self.state.dead_letters.values()
            if d.replay_of == letter_id and d.id is not None
        )

    def latest_replayed(self, event_id: str) -> int | None:
        replayed = [
            (d.replayed_at is not None, d.replayed_at or datetime.min, d.id or 0)
            for d in self.state.dead_letters.values()
            if d.event_id == event_id and d.status is DeadLetterStatus.REPLAYED
        ]
        return max(replayed)[2] if replayed else None
