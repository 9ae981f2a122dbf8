"""The hot path's SQL statements, built once per dialect and reused with bound parameters."""

from __future__ import annotations

from functools import cache

from sqlalchemy import Executable, bindparam, insert, update

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
    stmt = insert_for(dialect, ProcessedEventRow).on_conflict_do_nothing()
    return stmt.returning(ProcessedEventRow.event_id)  # type: ignore[no-any-return]


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
