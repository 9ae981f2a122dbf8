"""The SQL repositories: groups, catalogs and history; the worker's own records; what a trace
reads.

SQL repositories for the aggregate: groups, images, catalog reservations and history.

SQL repositories for the worker's own records: jobs, stages, inbox, outbox, dead letters.

What `imagegroups trace` reads about one group, in SQL: each query rides an index.

The inbox rows of applied stage results are found by the event_ids the history holds (the
primary key); the rest by job through a partial index that holds only those rows. A group's
follow-ons were written in the transaction of a transition, at that transition's time, so
they are found by the group and those times (the outbox's BRIN index on `created_at`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Executable, and_, bindparam, func, or_, select, update

from domain import (
    CatalogReservation,
    DeadLetter,
    DeadLetterStatus,
    DuplicateImageGroupError,
    Image,
    ImageGroup,
    ImageGroupId,
    ImageGroupMismatchError,
    ImageGroupStatus,
    InboxRecord,
    InboxRepository,
    JobRecord,
    OutboxMessage,
    Page,
    RoleName,
    RowTaken,
    StageRecord,
    StageState,
    Transition,
    latest_per_job,
)
from persistence import db, models
from persistence.db import BatchingConnection
from persistence.models import (
    UNNAMED_BY_HISTORY,
    WAITING_LETTER,
    CatalogReservationRow,
    DeadLetterRow,
    DeliveryRow,
    ImageGroupRow,
    ImageRow,
    OutboxRow,
    ProcessedEventRow,
    StageRow,
    TransitionRow,
    dialect_insert,
)


class SqlImageGroupRepository:
    def __init__(self, conn: BatchingConnection) -> None:
        self.conn = conn

    def save(self, group: ImageGroup) -> None:
        insert = db.insert_group(self.conn.dialect.name)
        inserted = self.conn.rows(insert, models.group_values(group))
        if not inserted:
            held = self.conn.scalar(
                select(ImageGroupRow.job_id).where(ImageGroupRow.id == group.id.value)
            )
            if held is not None:
                raise DuplicateImageGroupError(group.id.value, group.job_id, held)
            mine = self.conn.scalar(
                select(ImageGroupRow.id).where(ImageGroupRow.job_id == group.job_id)
            )
            raise ImageGroupMismatchError(group.job_id, mine, group.id.value)
        self._insert_images(group)

    def create(self, group: ImageGroup) -> None:
        if not self.conn.batches:
            self.save(group)
            return
        # With the next round trip, the COMMIT's in the handler: the reservation lock the
        # caller holds makes a conflict rare, and a conflict fails the transaction
        # (RowTaken), before anything is written.
        self.conn.defer(db.INSERT_NEW_GROUP, models.group_values(group), taken=RowTaken)
        self._insert_images(group)

    def _insert_images(self, group: ImageGroup) -> None:
        if group.images:
            self.conn.defer(
                db.INSERT_IMAGES,
                [models.image_values(group.id, i) for i in group.images],
            )

    def update_status(self, group: ImageGroup) -> None:
        values = {
            "b_id": group.id.value,
            "b_status": group.status.value,
            "b_attempt": group.attempt,
            "b_updated_at": group.updated_at,
            "b_deadline_at": group.deadline_at,
        }
        self.conn.defer(db.UPDATE_GROUP_STATUS, values)

    def _load(self, by: str, value: str, *, lock: bool) -> ImageGroup | None:
        rows = self.conn.rows(_load_statement(by, lock), {"value": value})
        if not rows:
            return None
        images = [
            Image(id=str(r.image_id), role=RoleName(r.role), image_name=r.image_name)
            for r in rows
            if r.image_id is not None
        ]
        return models.group_to_entity(rows[0], images)

    def find_by_id(self, group_id: ImageGroupId) -> ImageGroup | None:
        return self._load("id", group_id.value, lock=False)

    def find_by_id_for_update(self, group_id: ImageGroupId) -> ImageGroup | None:
        return self._load("id", group_id.value, lock=True)

    def find_by_job_id(self, job_id: str) -> ImageGroup | None:
        return self._load("job_id", job_id, lock=False)

    def find_by_job_id_for_update(self, job_id: str) -> ImageGroup | None:
        return self._load("job_id", job_id, lock=True)

    def list_by_status(
        self,
        status: ImageGroupStatus | None,
        *,
        limit: int,
        offset: int,
        overdue_at: datetime | None = None,
    ) -> Page[ImageGroup]:
        where = [] if status is None else [ImageGroupRow.status == status.value]
        if overdue_at is not None:
            where += [
                ImageGroupRow.deadline_at.is_not(None),
                ImageGroupRow.deadline_at <= overdue_at,
            ]
        total = self.conn.scalar(select(func.count()).select_from(ImageGroupRow).where(*where))
        rows = self.conn.execute(
            select(ImageGroupRow)
            .where(*where)
            .order_by(ImageGroupRow.created_at.desc(), ImageGroupRow.id.desc())
            .limit(limit)
            .offset(offset)
        ).all()
        return Page(items=self._with_images(rows), total=total or 0, limit=limit, offset=offset)

    def claim_overdue(self, now: datetime, *, limit: int) -> list[ImageGroup]:
        rows = self.conn.execute(OVERDUE, {"now": now, "limit": limit}).all()
        return self._with_images(rows)

    def _with_images(self, rows: Sequence[Any]) -> list[ImageGroup]:
        """Entities for group rows, with all their images in one more query."""
        ids = [r.id for r in rows]
        images: dict[str, list[Image]] = {i: [] for i in ids}
        if ids:
            for image in self.conn.execute(
                select(ImageRow).where(ImageRow.image_group_id.in_(ids)).order_by(ImageRow.role)
            ):
                images[image.image_group_id].append(models.image_to_entity(image))
        return [models.group_to_entity(r, images[r.id]) for r in rows]

    def exists(self, group_id: ImageGroupId) -> bool:
        found = self.conn.scalar(select(ImageGroupRow.id).where(ImageGroupRow.id == group_id.value))
        return found is not None


class SqlCatalogRepository:
    def __init__(self, conn: BatchingConnection) -> None:
        self.conn = conn

    def reserve(self, reservation: CatalogReservation) -> CatalogReservation | None:
        inserted = self.conn.rows(
            db.reserve_catalog(self.conn.dialect.name), models.reservation_values(reservation)
        )
        if inserted:
            return None
        # Under READ COMMITTED this statement sees the winner once its insert has committed.
        holder = self.conn.execute(
            select(CatalogReservationRow).where(
                CatalogReservationRow.image_group_id == reservation.image_group_id.value
            )
        ).first()
        if holder is not None and holder.job_id != reservation.job_id:
            raise DuplicateImageGroupError(
                reservation.image_group_id.value, reservation.job_id, holder.job_id
            )
        if holder is None:
            mine = self.find_by_job_id(reservation.job_id)
            raise ImageGroupMismatchError(
                reservation.job_id,
                None if mine is None else mine.image_group_id.value,
                reservation.image_group_id.value,
            )
        return models.reservation_to_entity(holder)

    def _find(self, job_id: str, *, lock: bool) -> CatalogReservation | None:
        rows = self.conn.rows(_reservation_statement(lock), {"job_id": job_id})
        return models.reservation_to_entity(rows[0]) if rows else None

    def reserve_late(self, reservation: CatalogReservation) -> None:
        values = models.reservation_values(reservation)
        self.conn.defer(db.INSERT_RESERVATION, values, taken=RowTaken)

    def find_by_job_id(self, job_id: str) -> CatalogReservation | None:
        return self._find(job_id, lock=False)

    def find_by_job_id_for_update(self, job_id: str) -> CatalogReservation | None:
        return self._find(job_id, lock=True)


class SqlHistoryRepository:
    def __init__(self, conn: BatchingConnection) -> None:
        self.conn = conn

    def add(self, transitions: Sequence[Transition]) -> None:
        if transitions:
            history = [models.transition_values(t) for t in transitions]
            self.conn.defer(db.INSERT_HISTORY, history)

    def list_for_group(self, group_id: ImageGroupId) -> list[Transition]:
        rows = self.conn.execute(
            select(TransitionRow)
            .where(TransitionRow.image_group_id == group_id.value)
            .order_by(TransitionRow.id)
        )
        return [models.transition_to_entity(r) for r in rows]


#: The deadline sweep's one query: the partial index ix_image_groups_deadline holds only the
#: waiting groups, so it costs the same however many groups exist. SKIP LOCKED: a group
#: another sweeper (or a stage result) holds is left to it; the caller re-checks under lock.
OVERDUE = (
    select(ImageGroupRow)
    .where(ImageGroupRow.deadline_at.is_not(None), ImageGroupRow.deadline_at <= bindparam("now"))
    .order_by(ImageGroupRow.deadline_at)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)


@cache
def _load_statement(by: str, lock: bool) -> Executable:
    """The group with its images in one round trip; built once per shape, then reused."""
    stmt = (
        select(
            ImageGroupRow,
            ImageRow.id.label("image_id"),
            ImageRow.role,
            ImageRow.image_name,
        )
        .outerjoin(ImageRow, ImageRow.image_group_id == ImageGroupRow.id)
        .where(getattr(ImageGroupRow, by) == bindparam("value"))
    )
    # FOR UPDATE OF image_groups: the outer join's nullable side cannot be locked.
    return stmt.with_for_update(of=ImageGroupRow) if lock else stmt


@cache
def _reservation_statement(lock: bool) -> Executable:
    stmt = select(CatalogReservationRow).where(CatalogReservationRow.job_id == bindparam("job_id"))
    return stmt.with_for_update() if lock else stmt


class SqlJobRepository:
    def __init__(self, conn: BatchingConnection) -> None:
        self.conn = conn

    def upsert(self, job: JobRecord, at: datetime) -> None:
        values = {
            "job_id": job.job_id,
            "pipeline_phase": job.pipeline_phase.value,
            "created_at": at,
            "updated_at": at,
        }
        self.conn.defer(db.upsert_job(self.conn.dialect.name), values)


class SqlStageRepository:
    def __init__(self, conn: BatchingConnection) -> None:
        self.conn = conn

    def upsert_many(self, records: Sequence[StageRecord]) -> None:
        rows = []
        for record in records:
            values = models.shallow_values(models.storable_stage(record))
            values["stage"] = record.stage.value
            values["state"] = record.state.value
            rows.append(values)
        if rows:
            self.conn.defer(db.upsert_stage(self.conn.dialect.name), rows)

    def find(self, job_id: str) -> list[StageRecord]:
        rows = self.conn.execute(
            select(StageRow).where(StageRow.job_id == job_id).order_by(StageRow.updated_at)
        )
        return [models.stage_to_entity(r) for r in rows]

    def latest_failures(self, job_ids: Sequence[str]) -> dict[str, StageRecord]:
        if not job_ids:
            return {}
        rows = self.conn.execute(
            select(StageRow).where(
                StageRow.job_id.in_(list(job_ids)), StageRow.state == StageState.FAILED.value
            )
        )
        return latest_per_job(models.stage_to_entity(r) for r in rows)


class SqlInboxRepository(InboxRepository):
    def __init__(self, conn: BatchingConnection) -> None:
        self.conn = conn

    def claim_later(self, record: InboxRecord) -> Callable[[], bool]:
        # A concurrent delivery of the same event waits here on the unique index until the
        # first commits, then finds the conflict: exactly one of them applies the event.
        values = {
            "event_id": record.event_id,
            "task_name": record.task_name,
            "outcome": record.outcome,
            "processed_at": record.processed_at,
            "job_id": record.job_id,
            "causation_id": record.causation_id,
            "deliveries": record.deliveries,
        }
        claimed = self.conn.read_later(db.claim_event(self.conn.dialect.name), values)
        return lambda: int(claimed.rows()[0][0]) == 0

    def claim_late(self, record: InboxRecord) -> None:
        values = {
            "event_id": record.event_id,
            "task_name": record.task_name,
            "outcome": record.outcome,
            "processed_at": record.processed_at,
            "job_id": record.job_id,
            "causation_id": record.causation_id,
            "deliveries": record.deliveries,
        }
        self.conn.defer(db.INSERT_EVENT, values, taken=RowTaken)

    def set_outcome(self, event_id: str, outcome: str) -> None:
        self.conn.defer(db.SET_OUTCOME, {"b_event_id": event_id, "b_outcome": outcome})

    def count_by_outcome(self) -> dict[str, int]:
        rows = self.conn.execute(
            select(ProcessedEventRow.outcome, func.count()).group_by(ProcessedEventRow.outcome)
        ).all()
        return {outcome: count for outcome, count in rows}


class SqlOutboxRepository:
    def __init__(self, conn: BatchingConnection) -> None:
        self.conn = conn

    def add(self, message: OutboxMessage) -> None:
        self.conn.defer(
            db.INSERT_OUTBOX,
            {
                "event_id": message.event_id,
                "task_name": message.task_name,
                "queue": message.queue,
                "body": message.body,
                "image_group_id": message.image_group_id,
                "created_at": message.created_at,
                "sent_at": message.sent_at,
            },
        )

    def claim_unsent(
        self, *, created_before: datetime, lease_until: datetime, now: datetime, limit: int
    ) -> list[OutboxMessage]:
        # SKIP LOCKED: relays in several workers each take different rows; the lease (not a
        # held lock) covers the publish, so no network I/O happens under a row lock.
        candidates = (
            select(OutboxRow.event_id)
            .where(
                OutboxRow.sent_at.is_(None),
                OutboxRow.created_at < created_before,
                (OutboxRow.lease_until.is_(None)) | (OutboxRow.lease_until < now),
            )
            .order_by(OutboxRow.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        rows = self.conn.execute(
            update(OutboxRow)
            .where(OutboxRow.event_id.in_(candidates.scalar_subquery()))
            .values(lease_until=lease_until)
            .returning(*OutboxRow.__table__.columns)
        ).all()
        return sorted((models.outbox_to_entity(r) for r in rows), key=lambda m: m.created_at)

    def mark_sent(self, event_ids: Sequence[str], at: datetime) -> None:
        if event_ids:
            statement = db.mark_sent(self.conn.dialect.name)
            self.conn.defer(statement, {"b_ids": list(event_ids), "b_sent_at": at})

    def pending(self) -> tuple[int, datetime | None]:
        count, oldest = self.conn.execute(
            select(func.count(), func.min(OutboxRow.created_at)).where(OutboxRow.sent_at.is_(None))
        ).one()
        return int(count), oldest


class SqlDeliveryRepository:
    def __init__(self, conn: BatchingConnection) -> None:
        self.conn = conn

    def record_delivery(self, key: str, at: datetime, copy: str | None = None) -> int | None:
        stmt = dialect_insert(self.conn, DeliveryRow).values(
            key=key, attempts=1, first_at=at, last_at=at, holder=copy
        )
        if copy is None:
            stmt = stmt.on_conflict_do_update(
                index_elements=[DeliveryRow.key],
                set_={"attempts": DeliveryRow.attempts + 1, "last_at": at},
            )
        else:
            # Counted only for the copy that holds the chain, or the first one to claim it;
            # PostgreSQL's row lock makes two copies counted at once take turns.
            stmt = stmt.on_conflict_do_update(
                index_elements=[DeliveryRow.key],
                set_={
                    "attempts": DeliveryRow.attempts + 1,
                    "last_at": at,
                    "holder": func.coalesce(DeliveryRow.holder, stmt.excluded.holder),
                },
                where=DeliveryRow.holder.is_(None) | (DeliveryRow.holder == stmt.excluded.holder),
            )
        counted = self.conn.execute(stmt.returning(DeliveryRow.attempts)).scalar_one_or_none()
        return None if counted is None else int(counted)

    def chain_holder(self, key: str) -> str | None:
        holder: str | None = self.conn.scalar(
            select(DeliveryRow.holder).where(DeliveryRow.key == key)
        )
        return holder

    def first_counted_at(self, key: str) -> datetime | None:
        first: datetime | None = self.conn.scalar(
            select(DeliveryRow.first_at).where(DeliveryRow.key == key)
        )
        return first

    def reset(self, key: str) -> None:
        self.conn.defer(db.RESET_DELIVERIES, {"b_key": key})


class SqlDeadLetterRepository:
    def __init__(self, conn: BatchingConnection) -> None:
        self.conn = conn

    def add(self, letter: DeadLetter) -> int:
        values = models.shallow_values(letter)
        values.pop("id")
        values["status"] = letter.status.value
        values["body_digest"] = hashlib.sha256(letter.body.encode()).hexdigest()
        stmt = dialect_insert(self.conn, DeadLetterRow).values(**values)
        # A copy of a waiting message failing again updates its letter instead of adding one.
        later = ("error_type", "error_message", "traceback", "attempts", "last_failed_at")
        stmt = stmt.on_conflict_do_update(
            index_elements=[DeadLetterRow.event_id, DeadLetterRow.body_digest],
            index_where=WAITING_LETTER,
            set_={name: stmt.excluded[name] for name in later},
        )
        return int(self.conn.execute(stmt.returning(DeadLetterRow.id)).scalar_one())

    def get(self, letter_id: int) -> DeadLetter | None:
        row = self.conn.execute(select(DeadLetterRow).where(DeadLetterRow.id == letter_id)).first()
        return None if row is None else models.dead_letter_to_entity(row)

    def list(self, status: DeadLetterStatus | None = None) -> list[DeadLetter]:
        stmt = select(DeadLetterRow).order_by(DeadLetterRow.id)
        if status is not None:
            stmt = stmt.where(DeadLetterRow.status == status.value)
        return [models.dead_letter_to_entity(r) for r in self.conn.execute(stmt)]

    def set_status(self, letter_id: int, status: DeadLetterStatus, at: datetime) -> None:
        replayed_at = at if status is DeadLetterStatus.REPLAYED else None
        values = {"b_id": letter_id, "b_status": status.value, "b_replayed_at": replayed_at}
        self.conn.defer(db.SET_LETTER_STATUS, values)

    def count(self, status: DeadLetterStatus) -> int:
        total = self.conn.scalar(
            select(func.count())
            .select_from(DeadLetterRow)
            .where(DeadLetterRow.status == status.value)
        )
        return int(total or 0)

    def replays_of(self, letter_id: int) -> Sequence[int]:
        rows = self.conn.execute(
            select(DeadLetterRow.id)
            .where(DeadLetterRow.replay_of == letter_id)
            .order_by(DeadLetterRow.id)
        )
        return [int(row[0]) for row in rows]

    def latest_replayed(self, event_id: str) -> int | None:
        found: int | None = self.conn.scalar(
            select(DeadLetterRow.id)
            .where(
                DeadLetterRow.event_id == event_id,
                DeadLetterRow.status == DeadLetterStatus.REPLAYED.value,
            )
            .order_by(DeadLetterRow.replayed_at.desc().nulls_last(), DeadLetterRow.id.desc())
            .limit(1)
        )
        return found


class SqlTraceRepository:
    def __init__(self, conn: BatchingConnection) -> None:
        self.conn = conn

    def inbox(self, job_id: str, event_ids: Sequence[str]) -> list[InboxRecord]:
        row = ProcessedEventRow
        unnamed = and_(row.job_id == job_id, UNNAMED_BY_HISTORY)
        where = or_(unnamed, row.event_id.in_(list(event_ids))) if event_ids else unnamed
        rows = self.conn.execute(select(row).where(where).order_by(row.processed_at, row.event_id))
        return [models.inbox_to_entity(r) for r in rows]

    def follow_ons(
        self, group_id: ImageGroupId, written: Sequence[datetime]
    ) -> list[OutboxMessage]:
        if not written:
            return []
        rows = self.conn.execute(
            select(OutboxRow)
            .where(
                OutboxRow.image_group_id == group_id.value,
                OutboxRow.created_at.in_(sorted(set(written))),
            )
            .order_by(OutboxRow.created_at, OutboxRow.event_id)
        )
        return [models.outbox_to_entity(r) for r in rows]

    def dead_letters(self, job_id: str, event_ids: Sequence[str]) -> list[DeadLetter]:
        # The dead-letter store is small (an operator works through it): a scan of the
        # bodies for the job's id finds the letters whose event the inbox never held.
        named = DeadLetterRow.body.contains(job_id, autoescape=True)
        if event_ids:
            named = or_(named, DeadLetterRow.event_id.in_(list(event_ids)))
        rows = self.conn.execute(select(DeadLetterRow).where(named).order_by(DeadLetterRow.id))
        return [models.dead_letter_to_entity(r) for r in rows]
