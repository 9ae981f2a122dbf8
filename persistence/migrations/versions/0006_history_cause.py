"""Why each transition happened, kept with it; and what `trace` needs of the inbox.

`transition_history` gets the cause of each move (its kind: an event, an operator's command or
a deadline; the stage, attempt and outcome; the error; the command), written with the move and
never updated, so a redeploy no longer hides why attempt 1 failed.

`processed_events` gets the event's job and causation_id, a count of its deliveries and of
those that found it already handled (duplicates), and a partial index by job over only the rows the
history cannot name (an event not applied, and the catalog): an applied stage result, nearly
every event, costs no index entry.

Backfill: the moves already recorded get what the rows still tell. The status pair tells the
stage and the outcome (DEPLOYING -> FAILED is a deploy that failed); a stage row whose event is
the move's gives the attempt and the error (only the stage's latest record is kept, so an older
attempt's error is gone); a move into a running status with an event of its own is an
operator's request (an event that starts a stage also ended the one before, with the same
event_id), a move to CLEANED an operator's cleanup; a stage row with error_code STAGE_TIMEOUT
names a deadline. A failure neither the inbox (7 days) nor a stage row can attribute to an
event or a deadline keeps kind NULL, with its stage, attempt and outcome.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNNAMED = sa.text("outcome <> 'applied' OR task_name = 'imagegroups.catalog_parsed'")
CAUSE_COLUMNS = (
    ("cause_kind", sa.String(16)),
    ("cause_event_type", sa.String(64)),
    ("cause_stage", sa.String(32)),
    ("cause_attempt", sa.Integer()),
    ("cause_outcome", sa.String(16)),
    ("cause_error_code", sa.Text()),
    ("cause_error_summary", sa.Text()),
    ("cause_command", sa.String(64)),
)
#: The status a stage runs in -> the stage (as the worker of this revision defines them).
RUNNING = {"DEPLOYING": "deploy", "RESTARTING": "pxe-boot", "VALIDATING": "validate"}
BATCH = 500

history = sa.table(
    "transition_history",
    sa.column("id", sa.BigInteger),
    sa.column("image_group_id", sa.String),
    sa.column("from_status", sa.String),
    sa.column("to_status", sa.String),
    sa.column("event_id", sa.String),
    *(sa.column(name, kind) for name, kind in CAUSE_COLUMNS),
)
groups = sa.table("image_groups", sa.column("id", sa.String), sa.column("job_id", sa.String))
stages = sa.table(
    "stages",
    *(sa.column(n) for n in ("job_id", "stage", "state", "attempt", "event_id")),
    *(sa.column(n) for n in ("error_code", "error_summary")),
)
inbox = sa.table("processed_events", sa.column("event_id", sa.String))


def upgrade() -> None:
    with op.batch_alter_table("transition_history") as batch:
        for name, kind in CAUSE_COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))
    with op.batch_alter_table("processed_events") as batch:
        batch.add_column(sa.Column("job_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("causation_id", sa.String(36), nullable=True))
        for name, default in (("deliveries", "1"), ("duplicates", "0")):
            column = sa.Column(name, sa.Integer(), server_default=sa.text(default), nullable=False)
            batch.add_column(column)
    op.create_index(
        "ix_processed_events_job_unnamed",
        "processed_events",
        ["job_id"],
        postgresql_where=UNNAMED,
        sqlite_where=UNNAMED,
    )
    backfill(op.get_bind())


def downgrade() -> None:
    op.drop_index(
        "ix_processed_events_job_unnamed",
        table_name="processed_events",
        postgresql_where=UNNAMED,
        sqlite_where=UNNAMED,
    )
    with op.batch_alter_table("processed_events") as batch:
        for name in ("duplicates", "deliveries", "causation_id", "job_id"):
            batch.drop_column(name)
    with op.batch_alter_table("transition_history") as batch:
        for name, _ in reversed(CAUSE_COLUMNS):
            batch.drop_column(name)


def backfill(conn: sa.Connection) -> None:
    """Every group's moves, BATCH groups at a time (bounded memory on a large history)."""
    last = ""
    while True:
        batch = conn.execute(
            sa.select(groups.c.id, groups.c.job_id)
            .where(groups.c.id > last)
            .order_by(groups.c.id)
            .limit(BATCH)
        ).all()
        if not batch:
            return
        last = batch[-1].id
        _backfill_groups(conn, {row.id: row.job_id for row in batch})


def _backfill_groups(conn: sa.Connection, jobs: Mapping[str, str]) -> None:
    rows = conn.execute(
        sa.select(history)
        .where(history.c.image_group_id.in_(list(jobs)))
        .order_by(history.c.image_group_id, history.c.id)
    ).all()
    by_event = {
        r.event_id: r
        for r in conn.execute(sa.select(stages).where(stages.c.job_id.in_(list(jobs.values()))))
    }
    ids = list({r.event_id for r in rows})
    handled = set(
        conn.execute(sa.select(inbox.c.event_id).where(inbox.c.event_id.in_(ids))).scalars()
        if ids
        else ()
    )
    updates: list[dict[str, Any]] = []
    for group_id in jobs:
        mine = [r for r in rows if r.image_group_id == group_id]
        updates += causes(mine, by_event, handled)
    if updates:
        values: dict[str, Any] = {n: sa.bindparam(f"b_{n}") for n, _ in CAUSE_COLUMNS}
        conn.execute(
            history.update().where(history.c.id == sa.bindparam("b_id")).values(**values), updates
        )


def causes(
    rows: Sequence[Any], by_event: Mapping[str, Any], handled: set[str]
) -> list[dict[str, Any]]:
    """The cause of each of one group's moves, oldest first, as update parameters."""
    attempt = 1
    found: list[dict[str, Any]] = []
    previous: tuple[str | None, dict[str, Any]] = (None, {})
    for row in rows:
        if row.from_status == "FAILED" and row.to_status == "DEPLOYING":
            attempt += 1  # only an operator's redeploy leaves FAILED, and it starts a new attempt
        if row.to_status in RUNNING and previous[0] == row.event_id:
            cause = previous[1]  # the event that ended a stage started the next one
        else:
            cause = _cause(row, attempt, by_event.get(row.event_id), handled)
        found.append({"b_id": row.id} | {f"b_{k}": v for k, v in cause.items()})
        previous = (row.event_id, cause)
    return found


def _cause(row: Any, attempt: int, stage: Any, handled: set[str]) -> dict[str, Any]:
    cause: dict[str, Any] = {name: None for name, _ in CAUSE_COLUMNS}
    if stage is not None and stage.state == "failed":
        cause |= {"cause_error_code": stage.error_code, "cause_error_summary": stage.error_summary}
    cause["cause_attempt"] = stage.attempt if stage is not None else attempt
    if row.from_status is None:  # created by a build result
        name = stage.stage if stage is not None else "build-image"
        return cause | _event(name, "succeeded")
    if row.from_status in RUNNING:  # a stage ended: by its result, or by its deadline
        outcome = "failed" if row.to_status == "FAILED" else "succeeded"
        cause |= {"cause_stage": RUNNING[row.from_status], "cause_outcome": outcome}
        if stage is not None and stage.error_code == "STAGE_TIMEOUT":
            return cause | {"cause_kind": "deadline"}
        if outcome == "succeeded" or stage is not None or row.event_id in handled:
            return cause | _event(RUNNING[row.from_status], outcome)
        return cause  # an event or a deadline, and no record left tells which
    if row.to_status in RUNNING:
        stage_name = RUNNING[row.to_status]
        return cause | {
            "cause_kind": "operator",
            "cause_stage": stage_name,
            "cause_attempt": attempt,
            "cause_command": f"request {stage_name}",
        }
    cause["cause_attempt"] = None
    if row.to_status == "CLEANED":
        return cause | {"cause_kind": "operator", "cause_command": "cleanup"}
    return cause


def _event(stage: str, outcome: str) -> dict[str, Any]:
    return {
        "cause_kind": "event",
        "cause_event_type": "stage.finished",
        "cause_stage": stage,
        "cause_outcome": outcome,
    }
