"""The domain's boundary: the commands it takes, the records it keeps, and what its handlers
need from storage.

The two incoming events as commands in the domain's vocabulary, parsed from the wire once.

A handler receives one of these, never the message it came in: the ids are typed, the stage
and outcome are enums, the catalog is already a valid reservation request.

Plain records the worker keeps beside the aggregate: stages, outbox, dead letters, jobs.

Ports: what the handlers need from storage, as protocols the adapters implement.

Only what the domain's handlers use: the worker's own records (delivery counts, dead
letters, the outbox relay's side, history and trace reads) are persistence/uow.py's.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

from domain.model import (
    CatalogReservation,
    ImageGroup,
    ImageGroupId,
    ImageGroupStatus,
    PipelinePhase,
    StageName,
    StageOutcome,
)


@dataclass(frozen=True, slots=True)
class EventIds:
    """Who an event is: its own id, its job, and the correlation it carries along."""

    event_id: str
    job_id: str
    correlation_id: str | None = None
    #: What it answers: the envelope's causation_id, else a stage result's request_event_id.
    causation_id: str | None = None
    #: Which delivery of the event this is: 1 the first, then each retry and redelivery.
    delivery: int = 1


@dataclass(frozen=True, slots=True)
class ReserveCatalog:
    """`catalog.parsed`: reserve the catalog's group id for the job (its roles and images)."""

    ids: EventIds
    catalog: CatalogReservation


@dataclass(frozen=True, slots=True)
class RecordStageResult:
    """`stage.finished`: the pipeline reports how a stage of the job's group went."""

    ids: EventIds
    stage: StageName
    outcome: StageOutcome
    image_group_id: ImageGroupId | None = None
    attempt: int | None = None
    request_event_id: str | None = None
    error_code: str | None = None
    error_summary: str | None = None
    result_detail: dict[str, Any] | None = None


class StageState(enum.StrEnum):
    REQUESTED = "requested"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class JobRecord:
    job_id: str
    pipeline_phase: PipelinePhase


@dataclass(frozen=True, slots=True)
class StageRecord:
    """The latest state of one stage of one job."""

    job_id: str
    stage: StageName
    state: StageState
    attempt: int
    event_id: str
    updated_at: datetime
    result_detail: dict[str, Any] | None = None
    error_code: str | None = None
    error_summary: str | None = None


def latest_per_job(records: Iterable[StageRecord]) -> dict[str, StageRecord]:
    """Each job's record of its highest attempt, the latest one on a tie.

    A redeploy starts a new attempt, and earlier stages keep the rows of older attempts, so
    the newest attempt is what tells why a group is where it is now.
    """
    latest: dict[str, StageRecord] = {}
    for record in records:
        seen = latest.get(record.job_id)
        if seen is None or (record.attempt, record.updated_at) > (seen.attempt, seen.updated_at):
            latest[record.job_id] = record
    return latest


@dataclass(frozen=True, slots=True)
class InboxRecord:
    """An incoming event the worker handled: its outcome and who sent it after what.

    `deliveries` counts every delivery: those before it was handled (retries, redeliveries)
    and `duplicates`, those that found it already handled. `job_id` and `causation_id` are
    None on rows written before migration 0006.
    """

    event_id: str
    task_name: str
    outcome: str
    processed_at: datetime
    job_id: str | None = None
    causation_id: str | None = None
    deliveries: int = 1
    duplicates: int = 0


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A follow-on event written in the transition's transaction, published after commit."""

    event_id: str
    task_name: str
    queue: str
    body: dict[str, Any]
    image_group_id: str
    created_at: datetime
    sent_at: datetime | None = None


class DeadLetterStatus(enum.StrEnum):
    DEAD = "dead"
    REPLAYED = "replayed"
    DISCARDED = "discarded"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event the worker gave up on, kept whole so an operator can fix the cause and replay."""

    id: int | None
    task_name: str
    event_id: str | None
    body: str
    content_type: str | None
    error_type: str
    error_message: str
    traceback: str | None
    attempts: int
    status: DeadLetterStatus
    first_failed_at: datetime
    last_failed_at: datetime
    replay_of: int | None = None
    replayed_at: datetime | None = None


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing, and how many there are in all."""

    items: list[T]
    total: int
    limit: int
    offset: int


class RowTaken(Exception):
    """A row inserted late (`claim_late`, `reserve_late`, `create`: sent with the COMMIT)
    met a unique key already taken: an event already claimed, a catalog already reserved,
    a group already stored. The transaction failed and the unit of work wrote nothing; the
    caller handles the event again the long way, which says what it is."""


class ImageGroupRepository(Protocol):
    def save(self, group: ImageGroup) -> None:
        """Insert a new group; DuplicateImageGroupError if its id or job already has one."""

    def create(self, group: ImageGroup) -> None:
        """Insert a new group, perhaps only with the commit: then a group already stored
        under its id or job fails the commit with RowTaken (nothing is written),
        and `save`, in a new unit of work, says which. Where writes are not held back for
        the commit, as `save`."""

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

    def reserve_late(self, reservation: CatalogReservation) -> None:
        """`reserve` of an id new to the job and to every other job, perhaps only with the
        commit: a reservation already there under the id or the job raises RowTaken, there
        or at the commit, and the unit of work writes nothing; `reserve` says what it was."""

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

    def claim_late(self, record: InboxRecord) -> None:
        """`claim` of an event new to the inbox, perhaps only with the commit: an event
        already there raises RowTaken, there or at the commit, and the unit of work writes
        nothing (not even the duplicate's count: `claim` counts it)."""

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
