"""One dead letter per event while it waits: later failures of the same event update it.

An event published twice (at-least-once publishers do that) fails twice; it is still one event
for the operator to replay or discard. Older duplicates already stored are marked discarded,
newest kept, so the index can be built.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 19:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WAITING = sa.text("status = 'dead' AND event_id IS NOT NULL")


def upgrade() -> None:
    op.execute(
        sa.text(
            "UPDATE dead_letters SET status = 'discarded' "
            "WHERE status = 'dead' AND event_id IS NOT NULL AND id NOT IN ("
            "SELECT max(id) FROM dead_letters WHERE status = 'dead' AND event_id IS NOT NULL "
            "GROUP BY event_id)"
        )
    )
    op.create_index(
        "uq_dead_letters_waiting_event_id",
        "dead_letters",
        ["event_id"],
        unique=True,
        postgresql_where=WAITING,
        sqlite_where=WAITING,
    )


def downgrade() -> None:
    op.drop_index(
        "uq_dead_letters_waiting_event_id",
        table_name="dead_letters",
        postgresql_where=WAITING,
        sqlite_where=WAITING,
    )
