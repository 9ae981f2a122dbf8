"""Ports beside the domain's: the worker's own records, which no handler writes.

The edge counts deliveries and stores dead letters, the outbox relay leases and marks the
follow-ons, the command line reads history and traces. A StoreUnitOfWork is the domain's
UnitOfWork with these too; SqlUnitOfWork and MemoryUnitOfWork are both.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from domain import (
    DeadLetter,
    DeadLetterStatus,
    ImageGroupId,
    InboxRecord,
    OutboxMessage,
    Transition,
    UnitOfWork,
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
    def record_delivery(self, key: str, at: datetime) -> int:
        """Count one more delivery of an event and return the count so far."""

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
