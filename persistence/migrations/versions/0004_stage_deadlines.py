"""Stage deadlines: each group waiting for a stage holds when its result is due.

`deadline_at` is set in the transaction that requests a stage and cleared by the transition
that ends the wait. The worker's sweep looks for passed deadlines through a partial index
that holds only the rows with one, so its cost does not grow with the number of groups.

Groups already waiting when this revision is applied had no deadline: each gets the default
timeout of its stage counted from now (the settings are the worker's, not the migration's,
and counting from the request could fail at once a stage an operator gave longer).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HAS_DEADLINE = sa.text("deadline_at IS NOT NULL")
#: The contract's default timeouts (docs/contract.md §1), by the status a stage runs in.
DEFAULT_TIMEOUTS = {"DEPLOYING": 3600, "RESTARTING": 1800, "VALIDATING": 3600}


def upgrade() -> None:
    with op.batch_alter_table("image_groups") as batch:
        batch.add_column(sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_image_groups_deadline",
        "image_groups",
        ["deadline_at"],
        postgresql_where=HAS_DEADLINE,
        sqlite_where=HAS_DEADLINE,
    )
    now = datetime.now(UTC)
    groups = sa.table(
        "image_groups",
        sa.column("status", sa.String),
        sa.column("deadline_at", sa.DateTime(timezone=True)),
    )
    for status, seconds in DEFAULT_TIMEOUTS.items():
        op.execute(
            groups.update()
            .where(groups.c.status == status, groups.c.deadline_at.is_(None))
            .values(deadline_at=now + timedelta(seconds=seconds))
        )


def downgrade() -> None:
    op.drop_index(
        "ix_image_groups_deadline",
        table_name="image_groups",
        postgresql_where=HAS_DEADLINE,
        sqlite_where=HAS_DEADLINE,
    )
    with op.batch_alter_table("image_groups") as batch:
        batch.drop_column("deadline_at")
