"""Ports: what the handlers need from storage, as protocols the adapters implement.

Only what the domain's handlers use: the worker's own records (delivery counts, dead
letters, the outbox relay's side, history and trace reads) are persistence/ports.py's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Generic, Protocol, TypeVar

from domain.catalog import CatalogReservation
from domain.model import ImageGroup
from domain.records import InboxRecord, JobRecord, OutboxMessage, StageRecord
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
        only if the caller commits). It is `claim_later` answered at once: an adapter that
        subclasses this port implements only that one."""
        record = InboxRecord(event_id, task_name, outcome, at, job_id, causation_id, delivery)
        return self.claim_later(record)()

    def claim_later(self, record: InboxRecord) -> Callable[[], bool]:
        """`claim` of this record (its `deliveries`: this delivery's number), its answer
        asked for later: the claim may wait to reach the database with the next statement
        (in this order), and calling the result gives the answer."""

    def set_outcome(self, event_id: str, outcome: str) -> None: ...

    def count_by_outcome(self) -> dict[str, int]: ...


class UnitOfWork(Protocol):
    """One database transaction; nothing is stored unless `commit` is called.

    `commit` also stores what the groups it handed out or was given recorded since
    (ImageGroup.events): their history, stage and outbox rows, in the same transaction.
    """

    groups: ImageGroupRepository
    catalogs: CatalogRepository
    jobs: JobRepository
    stages: StageRepository
    inbox: InboxRepository

    @property
    def follow_ons(self) -> Sequence[OutboxMessage]:
        """The follow-on events its commits stored in the outbox, in order: the caller
        publishes them once the transaction is over."""
        ...

    def __enter__(self) -> UnitOfWork: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...
