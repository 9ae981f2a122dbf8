"""The tables, and how domain objects become rows and rows become domain objects.

SQLAlchemy 2.0 table models; Alembic's initial revision creates exactly these.

Dialect-aware INSERT helpers shared by the SQL repositories.

Text every supported database stores: PostgreSQL refuses NUL and lone surrogates outright.

Free text from the pipeline (error codes and summaries, result details, catalog names) is
kept, not refused: a deploy failure whose summary holds a NUL must still fail its group.
A NUL becomes the four characters `\\x00`, a lone surrogate its `\\udXXX` escape.

Row <-> entity mappers: database rows never leave the persistence package.

Rows are Core result rows (attribute access by column name), so `Any` is their type here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, configure_mappers, mapped_column

from domain import (
    CatalogReservation,
    CauseKind,
    DeadLetter,
    DeadLetterStatus,
    Image,
    ImageGroup,
    ImageGroupId,
    ImageGroupStatus,
    InboxRecord,
    OutboxMessage,
    PipelinePhase,
    RoleName,
    StageName,
    StageOutcome,
    StageRecord,
    StageState,
    Transition,
    TransitionCause,
)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Timestamps stored with time zone; SQLite hands them back naive, so re-attach UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


JsonDoc = JSON().with_variant(JSONB(), "postgresql")


def _in(values: Any) -> str:
    return ", ".join(f"'{v.value}'" for v in values)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


#: Only groups waiting for a stage have a deadline: the sweep's index holds just those rows.
HAS_DEADLINE = text("deadline_at IS NOT NULL")


class ImageGroupRow(Base):
    __tablename__ = "image_groups"
    __table_args__ = (
        CheckConstraint(f"status IN ({_in(ImageGroupStatus)})", name="status"),
        Index(
            "ix_image_groups_deadline",
            "deadline_at",
            postgresql_where=HAS_DEADLINE,
            sqlite_where=HAS_DEADLINE,
        ),
    )

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(36), unique=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempt: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # When the requested stage's result is due (migration 0004); NULL while none runs.
    deadline_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ImageRow(Base):
    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("image_group_id", "role"),)

    id: Mapped[str] = mapped_column(Uuid(as_uuid=False), primary_key=True)
    image_group_id: Mapped[str] = mapped_column(ForeignKey("image_groups.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(128))
    image_name: Mapped[str] = mapped_column(Text)


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(f"pipeline_phase IN ({_in(PipelinePhase)})", name="pipeline_phase"),
    )

    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    pipeline_phase: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class CatalogReservationRow(Base):
    """The primary key on image_group_id is what makes a reservation race-free."""

    __tablename__ = "catalog_reservations"

    image_group_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(36), unique=True)
    roles: Mapped[list[str]] = mapped_column(JsonDoc)
    role_images: Mapped[dict[str, str]] = mapped_column(JsonDoc)
    catalog_name: Mapped[str | None] = mapped_column(Text)
    catalog_version: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class StageRow(Base):
    __tablename__ = "stages"

    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    stage: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer)
    event_id: Mapped[str] = mapped_column(String(36))
    result_detail: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)
    error_code: Mapped[str | None] = mapped_column(Text)
    error_summary: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class TransitionRow(Base):
    __tablename__ = "transition_history"
    # No RETURNING of the new id: nobody reads it, and a history insert goes in a pipeline
    # with the commit, where no result can be read (persistence/db.py).
    __table_args__ = ({"implicit_returning": False},)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    image_group_id: Mapped[str] = mapped_column(
        ForeignKey("image_groups.id", ondelete="CASCADE"), index=True
    )
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str] = mapped_column(String(36))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    # Why the group moved (migration 0006), written with the move and never updated; sized as
    # the values they hold: the stage and the outcome as the stages table stores them, the
    # error as the event sent it (unbounded text there too), the command as the CLI names it.
    cause_kind: Mapped[str | None] = mapped_column(String(16))
    cause_event_type: Mapped[str | None] = mapped_column(String(64))
    cause_stage: Mapped[str | None] = mapped_column(String(32))
    cause_attempt: Mapped[int | None] = mapped_column(Integer)
    cause_outcome: Mapped[str | None] = mapped_column(String(16))
    cause_error_code: Mapped[str | None] = mapped_column(Text)
    cause_error_summary: Mapped[str | None] = mapped_column(Text)
    cause_command: Mapped[str | None] = mapped_column(String(64))


#: The inbox rows `trace` cannot reach through the history (see migration 0006).
UNNAMED_BY_HISTORY = text("outcome <> 'applied' OR task_name = 'imagegroups.catalog_parsed'")


class ProcessedEventRow(Base):
    """The inbox: an event_id here was handled, in the same transaction as its effects."""

    __tablename__ = "processed_events"
    # Retention deletes by age; rows arrive in time order, so BRIN (see migration 0005).
    # By job, only the rows the history cannot name: an applied stage result costs no entry.
    __table_args__ = (
        Index("ix_processed_events_processed_at", "processed_at", postgresql_using="brin"),
        Index(
            "ix_processed_events_job_unnamed",
            "job_id",
            postgresql_where=UNNAMED_BY_HISTORY,
            sqlite_where=UNNAMED_BY_HISTORY,
        ),
    )

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    task_name: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    processed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    job_id: Mapped[str | None] = mapped_column(String(36))
    causation_id: Mapped[str | None] = mapped_column(String(36))
    # Every delivery of the event, and those that found it already handled (each one's
    # transaction commits its count).
    deliveries: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    duplicates: Mapped[int] = mapped_column(Integer, server_default=text("0"))


class DeliveryRow(Base):
    """Deliveries per event, committed apart from the handler so a crash still counts."""

    __tablename__ = "event_deliveries"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    attempts: Mapped[int] = mapped_column(Integer)
    first_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # The copy (Celery task id) whose counted deliveries are the event's one retry chain
    # (migration 0007); NULL until a copy is counted with its id.
    holder: Mapped[str | None] = mapped_column(Text)


class OutboxRow(Base):
    __tablename__ = "outbox"
    __table_args__ = (
        Index(
            "ix_outbox_unsent",
            "created_at",
            postgresql_where=text("sent_at IS NULL"),
            sqlite_where=text("sent_at IS NULL"),
        ),
        Index("ix_outbox_created_at", "created_at", postgresql_using="brin"),
    )

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    task_name: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str] = mapped_column(String(64))
    body: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    image_group_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


#: A dead letter an operator has yet to replay or discard: at most one per copy of a message
#: (its event_id and the SHA-256 of its body).
WAITING_LETTER = text("status = 'dead' AND event_id IS NOT NULL")


class DeadLetterRow(Base):
    __tablename__ = "dead_letters"
    __table_args__ = (
        CheckConstraint(f"status IN ({_in(DeadLetterStatus)})", name="status"),
        Index(
            "uq_dead_letters_waiting_copy",
            "event_id",
            "body_digest",
            unique=True,
            postgresql_where=WAITING_LETTER,
            sqlite_where=WAITING_LETTER,
        ),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    task_name: Mapped[str] = mapped_column(String(255))
    event_id: Mapped[str | None] = mapped_column(String(64), index=True)
    body: Mapped[str] = mapped_column(Text)
    body_digest: Mapped[str | None] = mapped_column(String(64))
    content_type: Mapped[str | None] = mapped_column(String(128))
    error_type: Mapped[str] = mapped_column(String(128))
    error_message: Mapped[str] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    first_failed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_failed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    replay_of: Mapped[int | None] = mapped_column(
        ForeignKey("dead_letters.id", ondelete="SET NULL")
    )
    replayed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class HasDialect(Protocol):
    dialect: Dialect


def insert_for(dialect: str, model: Any) -> Any:
    """An INSERT that knows ON CONFLICT (PostgreSQL and SQLite spell it the same)."""
    return (postgresql if dialect == "postgresql" else sqlite).insert(model)


def dialect_insert(conn: HasDialect, model: Any) -> Any:
    return insert_for(conn.dialect.name, model)


def storable_text(value: str) -> str:
    return value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def storable_optional_text(value: str | None) -> str | None:
    return None if value is None else storable_text(value)


def storable_json_doc(value: Any) -> Any:
    """A JSON document with every key and string made storable (JSONB refuses \\u0000 too)."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable_text(str(k)): storable_json_doc(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable_json_doc(v) for v in value]
    return value


def storable_stage(record: StageRecord) -> StageRecord:
    return replace(
        record,
        error_code=storable_optional_text(record.error_code),
        error_summary=storable_optional_text(record.error_summary),
        result_detail=None
        if record.result_detail is None
        else storable_json_doc(record.result_detail),
    )


def storable_reservation(held: CatalogReservation) -> CatalogReservation:
    return replace(
        held,
        catalog_name=storable_optional_text(held.catalog_name),
        catalog_version=storable_optional_text(held.catalog_version),
    )


def storable_transition(move: Transition) -> Transition:
    cause = move.cause
    if cause.error_code is None and cause.error_summary is None:
        return move
    stored = replace(
        cause,
        error_code=storable_optional_text(cause.error_code),
        error_summary=storable_optional_text(cause.error_summary),
    )
    return replace(move, cause=stored)


def shallow_values(record: Any) -> dict[str, Any]:
    """A record's fields as a dict, values as they are: `dataclasses.asdict` deep-copies each
    one (datetimes, enums, JSON documents): 35 us per stage row against 2 us (timeit)."""
    return {f.name: getattr(record, f.name) for f in fields(record)}


def group_to_entity(row: Any, images: Iterable[Image]) -> ImageGroup:
    return ImageGroup(
        id=ImageGroupId(row.id),
        job_id=row.job_id,
        status=ImageGroupStatus(row.status),
        images=tuple(sorted(images, key=lambda i: i.role.value)),
        created_at=row.created_at,
        updated_at=row.updated_at,
        attempt=row.attempt,
        deadline_at=row.deadline_at,
    )


def group_values(group: ImageGroup) -> dict[str, object]:
    return {
        "id": group.id.value,
        "job_id": group.job_id,
        "status": group.status.value,
        "attempt": group.attempt,
        "created_at": group.created_at,
        "updated_at": group.updated_at,
        "deadline_at": group.deadline_at,
    }


def image_to_entity(row: Any) -> Image:
    return Image(id=str(row.id), role=RoleName(row.role), image_name=row.image_name)


def image_values(group_id: ImageGroupId, image: Image) -> dict[str, object]:
    return {
        "id": image.id,
        "image_group_id": group_id.value,
        "role": image.role.value,
        "image_name": image.image_name,
    }


def reservation_to_entity(row: Any) -> CatalogReservation:
    return CatalogReservation(
        image_group_id=ImageGroupId(row.image_group_id),
        job_id=row.job_id,
        roles=tuple(RoleName(r) for r in row.roles),
        role_images=dict(row.role_images),
        catalog_name=row.catalog_name,
        catalog_version=row.catalog_version,
        created_at=row.created_at,
    )


def reservation_values(reservation: CatalogReservation) -> dict[str, object]:
    reservation = storable_reservation(reservation)
    return {
        "image_group_id": reservation.image_group_id.value,
        "job_id": reservation.job_id,
        "roles": [r.value for r in reservation.roles],
        "role_images": dict(reservation.role_images),
        "catalog_name": reservation.catalog_name,
        "catalog_version": reservation.catalog_version,
        "created_at": reservation.created_at,
    }


def transition_to_entity(row: Any) -> Transition:
    return Transition(
        image_group_id=ImageGroupId(row.image_group_id),
        from_status=None if row.from_status is None else ImageGroupStatus(row.from_status),
        to_status=ImageGroupStatus(row.to_status),
        event_id=row.event_id,
        at=row.at,
        cause=cause_to_entity(row),
    )


def cause_to_entity(row: Any) -> TransitionCause:
    return TransitionCause(
        kind=None if row.cause_kind is None else CauseKind(row.cause_kind),
        event_type=row.cause_event_type,
        stage=None if row.cause_stage is None else StageName(row.cause_stage),
        attempt=row.cause_attempt,
        outcome=None if row.cause_outcome is None else StageOutcome(row.cause_outcome),
        error_code=row.cause_error_code,
        error_summary=row.cause_error_summary,
        command=row.cause_command,
    )


def transition_values(t: Transition) -> dict[str, object]:
    c = t.cause
    return {
        "image_group_id": t.image_group_id.value,
        "from_status": None if t.from_status is None else t.from_status.value,
        "to_status": t.to_status.value,
        "event_id": t.event_id,
        "at": t.at,
        "cause_kind": None if c.kind is None else c.kind.value,
        "cause_event_type": c.event_type,
        "cause_stage": None if c.stage is None else c.stage.value,
        "cause_attempt": c.attempt,
        "cause_outcome": None if c.outcome is None else c.outcome.value,
        "cause_error_code": storable_optional_text(c.error_code),
        "cause_error_summary": storable_optional_text(c.error_summary),
        "cause_command": c.command,
    }


def inbox_to_entity(row: Any) -> InboxRecord:
    return InboxRecord(
        event_id=row.event_id,
        task_name=row.task_name,
        outcome=row.outcome,
        processed_at=row.processed_at,
        job_id=row.job_id,
        causation_id=row.causation_id,
        deliveries=row.deliveries,
        duplicates=row.duplicates,
    )


def outbox_to_entity(row: Any) -> OutboxMessage:
    return OutboxMessage(
        event_id=row.event_id,
        task_name=row.task_name,
        queue=row.queue,
        body=dict(row.body),
        image_group_id=row.image_group_id,
        created_at=row.created_at,
        sent_at=row.sent_at,
    )


def dead_letter_to_entity(row: Any) -> DeadLetter:
    return DeadLetter(
        id=row.id,
        task_name=row.task_name,
        event_id=row.event_id,
        body=row.body,
        content_type=row.content_type,
        error_type=row.error_type,
        error_message=row.error_message,
        traceback=row.traceback,
        attempts=row.attempts,
        status=DeadLetterStatus(row.status),
        first_failed_at=row.first_failed_at,
        last_failed_at=row.last_failed_at,
        replay_of=row.replay_of,
        replayed_at=row.replayed_at,
    )


def stage_to_entity(row: Any) -> StageRecord:
    return StageRecord(
        job_id=row.job_id,
        stage=StageName(row.stage),
        state=StageState(row.state),
        attempt=row.attempt,
        event_id=row.event_id,
        updated_at=row.updated_at,
        result_detail=row.result_detail,
        error_code=row.error_code,
        error_summary=row.error_summary,
    )


# Every mapper is configured now, at import, before a worker starts its threads or forks its
# pool. SQLAlchemy would otherwise configure them on the first ORM statement, under a global
# lock; a pool process forked while a thread of the main process held that lock (the outbox
# sweep's first query, say) inherits it held, by a thread it does not have, and hangs on its
# own first statement (tests/unit/test_mappers_configured.py).
configure_mappers()
