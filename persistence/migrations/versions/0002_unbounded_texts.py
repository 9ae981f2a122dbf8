"""Texts the contract does not bound become TEXT, so a valid event never fails on a length.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 04:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = [
    ("images", "image_name", False),
    ("catalog_reservations", "catalog_name", True),
    ("catalog_reservations", "catalog_version", True),
    ("stages", "error_code", True),
]


def upgrade() -> None:
    for table, column, nullable in COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                column, type_=sa.Text(), existing_type=sa.String(255), existing_nullable=nullable
            )


def downgrade() -> None:
    # Longer values would not fit back; they are cut to the old limit first.
    for table, column, nullable in COLUMNS:
        op.execute(sa.text(f"UPDATE {table} SET {column} = substr({column}, 1, 255)"))
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                column, type_=sa.String(255), existing_type=sa.Text(), existing_nullable=nullable
            )
