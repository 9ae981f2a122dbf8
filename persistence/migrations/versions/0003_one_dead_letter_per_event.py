"""One dead letter per waiting message: a copy of it failing again updates that letter.

An event published twice (at-least-once publishers do that) fails twice; it is still one
message for the operator to replay or discard. A copy is the same event_id with the same
body (compared by its SHA-256, `body_digest`); another body under the same event_id stays a
letter of its own.

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
    # Letters stored before have no digest, so the index (NULLs are distinct) leaves them be.
    with op.batch_alter_table("dead_letters") as batch:
        batch.add_column(sa.Column("body_digest", sa.String(length=64), nullable=True))
    op.create_index(
        "uq_dead_letters_waiting_copy",
        "dead_letters",
        ["event_id", "body_digest"],
        unique=True,
        postgresql_where=WAITING,
        sqlite_where=WAITING,
    )


def downgrade() -> None:
    op.drop_index(
        "uq_dead_letters_waiting_copy",
        table_name="dead_letters",
        postgresql_where=WAITING,
        sqlite_where=WAITING,
    )
    with op.batch_alter_table("dead_letters") as batch:
        batch.drop_column("body_digest")
