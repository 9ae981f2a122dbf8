"""The hot path's SQL statements, built once per dialect and reused with bound parameters."""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import Executable, any_, bindparam, func, insert, update
from sqlalchemy.dialects import postgresql

from persistence.models import (
    CatalogReservationRow,
    ImageGroupRow,
    ImageRow,
    JobRow,
    OutboxRow,
    ProcessedEventRow,
    StageRow,
    TransitionRow,
)
from persistence.sql_common import insert_for

INSERT_IMAGES = insert(ImageRow)
INSERT_HISTORY = insert(TransitionRow)
INSERT_OUTBOX = insert(OutboxRow)
# Bind names differ from column names: SET clauses reserve the column-named parameters.
UPDATE_GROUP_STATUS = (
    update(ImageGroupRow)
    .where(ImageGroupRow.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        attempt=bindparam("b_attempt"),
        updated_at=bindparam("b_updated_at"),
        deadline_at=bindparam("b_deadline_at"),
    )
)


@cache
def claim_event(dialect: str) -> Executable:
    """Insert the inbox row, or count one more duplicate on the row there: still one
    statement, and `duplicates` comes back 0 exactly when this call inserted.

    A duplicate is one more delivery, unless it is a redelivery whose number says more (it
    was counted before handling): so a delivery is never counted twice.
    """
    stmt = insert_for(dialect, ProcessedEventRow)
    greatest = func.greatest if dialect == "postgresql" else func.max  # SQLite's scalar max
    row = ProcessedEventRow
    stmt = stmt.on_conflict_do_update(
        index_elements=[row.event_id],
        set_={
            "duplicates": row.duplicates + 1,
            "deliveries": greatest(row.deliveries + 1, stmt.excluded.deliveries),
        },
    )
    return stmt.returning(ProcessedEventRow.duplicates)  # type: ignore[no-any-return]


@cache
def mark_sent(dialect: str) -> Executable:
    """The relay's "sent" marks: on PostgreSQL `= ANY($1)` with the ids as one array, so the
    statement is the same whatever their number (psycopg prepares it once); IN elsewhere."""
    ids: Any = bindparam("b_ids", expanding=True)
    if dialect == "postgresql":
        ids = any_(bindparam("b_ids", type_=postgresql.ARRAY(OutboxRow.event_id.type)))
        matches = OutboxRow.event_id == ids
    else:
        matches = OutboxRow.event_id.in_(ids)
    return update(OutboxRow).where(matches).values(sent_at=bindparam("b_sent_at"), lease_until=None)


@cache
def insert_group(dialect: str) -> Executable:
    stmt = insert_for(dialect, ImageGroupRow).on_conflict_do_nothing()
    return stmt.returning(ImageGroupRow.id)  # type: ignore[no-any-return]


@cache
def reserve_catalog(dialect: str) -> Executable:
    stmt = insert_for(dialect, CatalogReservationRow).on_conflict_do_nothing()
    return stmt.returning(CatalogReservationRow.job_id)  # type: ignore[no-any-return]


@cache
def upsert_job(dialect: str) -> Executable:
    stmt = insert_for(dialect, JobRow)
    return stmt.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=[JobRow.job_id],
        set_={
            "pipeline_phase": stmt.excluded.pipeline_phase,
            "updated_at": stmt.excluded.updated_at,
        },
    )


@cache
def upsert_stage(dialect: str) -> Executable:
    stmt = insert_for(dialect, StageRow)
    keys = {"job_id", "stage"}
    changed = {
        c.name: stmt.excluded[c.name] for c in StageRow.__table__.columns if c.name not in keys
    }
    return stmt.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=[StageRow.job_id, StageRow.stage], set_=changed
    )
