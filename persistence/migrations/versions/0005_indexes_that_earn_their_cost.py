"""Indexes that earn their write cost: retention's, and none the product does not read.

Each event writes one inbox row and most write an outbox row, so every index on those tables
is paid for on the hot path. Dropped: the inbox's index on `outcome` and the outbox's on
`image_group_id` (no query of the product filters on either). Added for retention, which
deletes by age: BRIN indexes on the inbox's `processed_at` and the outbox's `created_at`.
Rows arrive in time order, so a BRIN index is a few pages and nearly free to keep up to date;
SQLite (the demo) has no BRIN, and gets a plain index.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 21:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index(op.f("ix_processed_events_outcome"), table_name="processed_events")
    op.drop_index(op.f("ix_outbox_image_group_id"), table_name="outbox")
    op.create_index(
        "ix_processed_events_processed_at",
        "processed_events",
        ["processed_at"],
        postgresql_using="brin",
    )
    op.create_index("ix_outbox_created_at", "outbox", ["created_at"], postgresql_using="brin")


def downgrade() -> None:
    op.drop_index("ix_outbox_created_at", table_name="outbox", postgresql_using="brin")
    op.drop_index(
        "ix_processed_events_processed_at",
        table_name="processed_events",
        postgresql_using="brin",
    )
    op.create_index(op.f("ix_outbox_image_group_id"), "outbox", ["image_group_id"])
    op.create_index(op.f("ix_processed_events_outcome"), "processed_events", ["outcome"])
