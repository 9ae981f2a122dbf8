"""SQLAlchemy 2.0 table models; Alembic's initial revision creates exactly these."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

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
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from domain import DeadLetterStatus, ImageGroupStatus, PipelinePhase

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
    # with the commit, where no result can be read (persistence/statements.py).
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
