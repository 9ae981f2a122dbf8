"""Ports: what the handlers need from storage, as protocols the adapters implement."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Generic, Protocol, TypeVar

from domain.catalog import CatalogReservation
from domain.model import ImageGroup, Transition
from domain.records import (
    DeadLetter,
    DeadLetterStatus,
    InboxRecord,
    JobRecord,
    OutboxMessage,
    StageRecord,
)
from domain.values import ImageGroupId, ImageGroupStatus

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing, and how many there are in all."""

    items: list[T]
    total: int
    limit: int
    offset: int


class ImageGroupRepository(Protocol):
    def save(self, group: ImageGroup) -> None:
        """Insert a new group; DuplicateImageGroupError if its id or job already has one."""

    def update_status(self, group: ImageGroup) -> None:
        """Write the group's status, attempt and updated_at."""

    def find_by_id(self, group_id: ImageGroupId) -> ImageGroup | None: ...

    def find_by_job_id(self, job_id: str) -> ImageGroup | None: ...

    def find_by_job_id_for_update(self, job_id: str) -> ImageGroup | None:
        """Load the group and hold its row lock until the unit of work ends."""

    def find_by_id_for_update(self, group_id: ImageGroupId) -> ImageGroup | None: ...

    def list_by_status(
        self,
        status: ImageGroupStatus | None,
        *,
        limit: int,
        offset: int,
        overdue_at: datetime | None = None,
    ) -> Page[ImageGroup]:
        """Newest first; with `overdue_at`, only groups whose deadline had passed by then."""

    def claim_overdue(self, now: datetime, *, limit: int) -> list[ImageGroup]:
        """Lock up to `limit` groups whose deadline passed by `now`, earliest deadline first.

        Rows another unit of work holds are skipped (SKIP LOCKED), so sweepers in several
        workers never take the same group; the locks last until this unit of work ends.
        """

    def exists(self, group_id: ImageGroupId) -> bool: ...


class CatalogRepository(Protocol):
    def reserve(self, reservation: CatalogReservation) -> CatalogReservation | None:
        """Claim the id for the job race-free: None when newly claimed, else the job's held
        reservation (the caller compares it with the new one, without reading it again).

        DuplicateImageGroupError when another job holds the id; ImageGroupMismatchError when
        the job already holds a different id (one job has at most one image group).
        """

    def find_by_job_id(self, job_id: str) -> CatalogReservation | None: ...

    def find_by_job_id_for_update(self, job_id: str) -> CatalogReservation | None:
        """Load the job's reservation and hold its row lock (serialises group creation)."""


class JobRepository(Protocol):
    def upsert(self, job: JobRecord, at: datetime) -> None: ...


class StageRepository(Protocol):
    def upsert_many(self, records: Sequence[StageRecord]) -> None:
        """Several stages of a transaction in one statement."""

    def find(self, job_id: str) -> list[StageRecord]: ...

    def latest_failures(self, job_ids: Sequence[str]) -> dict[str, StageRecord]:
        """Each job's failed stage of its highest attempt (the latest on a tie); jobs with
        no failed stage are left out. Why a FAILED group failed, for many groups at once."""


class HistoryRepository(Protocol):
    def add(self, transitions: Sequence[Transition]) -> None: ...

    def list_for_group(self, group_id: ImageGroupId) -> list[Transition]: ...


class InboxRepository(Protocol):
    def claim(
        self,
        event_id: str,
        task_name: str,
        outcome: str,
        at: datetime,
        *,
        job_id: str | None = None,
        causation_id: str | None = None,
        delivery: int = 1,
    ) -> bool:
        """Record the event as processed by its `delivery`-th delivery; False when it already
        was (a duplicate), and then the row counts one more duplicate and delivery (stored
        only if the caller commits)."""

    def claim_later(
        self,
        event_id: str,
        task_name: str,
        outcome: str,
        at: datetime,
        *,
        job_id: str | None = None,
        causation_id: str | None = None,
        delivery: int = 1,
    ) -> Callable[[], bool]:
        """`claim`, its answer asked for later: the claim may wait to reach the database
        with the next statement (in this order), and calling the result gives the answer."""

    def set_outcome(self, event_id: str, outcome: str) -> None: ...

    def count_by_outcome(self) -> dict[str, int]: ...


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


class UnitOfWork(Protocol):
    """One database transaction; nothing is stored unless `commit` is called."""

    groups: ImageGroupRepository
    catalogs: CatalogRepository
    jobs: JobRepository
    stages: StageRepository
    history: HistoryRepository
    inbox: InboxRepository
    outbox: OutboxRepository
    deliveries: DeliveryRepository
    dead_letters: DeadLetterRepository
    trace: TraceRepository

    def __enter__(self) -> UnitOfWork: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...
