"""Initial schema: image groups and images (docs/contract.md §5) and the worker's own tables.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-26 03:37:53.132264
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# JSONB on PostgreSQL (indexable, compact); plain JSON text on SQLite.
JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
# SQLite only autoincrements an INTEGER PRIMARY KEY.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "catalog_reservations",
        sa.Column("image_group_id", sa.String(length=128), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("roles", JSON_DOC, nullable=False),
        sa.Column("role_images", JSON_DOC, nullable=False),
        sa.Column("catalog_name", sa.String(length=255), nullable=True),
        sa.Column("catalog_version", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("image_group_id", name=op.f("pk_catalog_reservations")),
        sa.UniqueConstraint("job_id", name=op.f("uq_catalog_reservations_job_id")),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("task_name", sa.String(length=255), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("content_type", sa.String(length=128), nullable=True),
        sa.Column("error_type", sa.String(length=128), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=False),
        sa.Column("traceback", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("first_failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replay_of", BIG_ID, nullable=True),
        sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('dead', 'replayed', 'discarded')", name=op.f("ck_dead_letters_status")
        ),
        sa.ForeignKeyConstraint(
            ["replay_of"],
            ["dead_letters.id"],
            name=op.f("fk_dead_letters_replay_of_dead_letters"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
    )
    op.create_index(op.f("ix_dead_letters_event_id"), "dead_letters", ["event_id"], unique=False)
    op.create_index(op.f("ix_dead_letters_status"), "dead_letters", ["status"], unique=False)
    op.create_table(
        "event_deliveries",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_event_deliveries")),
    )
    op.create_table(
        "image_groups",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('BUILT', 'DEPLOYING', 'DEPLOYED', 'RESTARTING', 'RESTARTED', "
            "'VALIDATING', 'PASSED', 'FAILED', 'CLEANED')",
            name=op.f("ck_image_groups_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_image_groups")),
        sa.UniqueConstraint("job_id", name=op.f("uq_image_groups_job_id")),
    )
    op.create_index(
        op.f("ix_image_groups_created_at"), "image_groups", ["created_at"], unique=False
    )
    op.create_index(op.f("ix_image_groups_status"), "image_groups", ["status"], unique=False)
    op.create_table(
        "jobs",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("pipeline_phase", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "pipeline_phase IN ('BUILD', 'DEPLOY')", name=op.f("ck_jobs_pipeline_phase")
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_jobs")),
    )
    op.create_table(
        "outbox",
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("task_name", sa.String(length=64), nullable=False),
        sa.Column("queue", sa.String(length=64), nullable=False),
        sa.Column("body", JSON_DOC, nullable=False),
        sa.Column("image_group_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_outbox")),
    )
    op.create_index(op.f("ix_outbox_image_group_id"), "outbox", ["image_group_id"], unique=False)
    op.create_index(
        "ix_outbox_unsent",
        "outbox",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("sent_at IS NULL"),
        sqlite_where=sa.text("sent_at IS NULL"),
    )
    op.create_table(
        "processed_events",
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("task_name", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_processed_events")),
    )
    op.create_index(
        op.f("ix_processed_events_outcome"), "processed_events", ["outcome"], unique=False
    )
    op.create_table(
        "stages",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("result_detail", JSON_DOC, nullable=True),
        sa.Column("error_code", sa.String(length=255), nullable=True),
        sa.Column("error_summary", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "stage", name=op.f("pk_stages")),
    )
    op.create_table(
        "images",
        sa.Column("id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("image_group_id", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=128), nullable=False),
        sa.Column("image_name", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_group_id"],
            ["image_groups.id"],
            name=op.f("fk_images_image_group_id_image_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint("image_group_id", "role", name=op.f("uq_images_image_group_id")),
    )
    op.create_table(
        "transition_history",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("image_group_id", sa.String(length=128), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_group_id"],
            ["image_groups.id"],
            name=op.f("fk_transition_history_image_group_id_image_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transition_history")),
    )
    op.create_index(
        op.f("ix_transition_history_image_group_id"),
        "transition_history",
        ["image_group_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_transition_history_image_group_id"), table_name="transition_history")
    op.drop_table("transition_history")
    op.drop_table("images")
    op.drop_table("stages")
    op.drop_index(op.f("ix_processed_events_outcome"), table_name="processed_events")
    op.drop_table("processed_events")
    op.drop_index(
        "ix_outbox_unsent",
        table_name="outbox",
        postgresql_where=sa.text("sent_at IS NULL"),
        sqlite_where=sa.text("sent_at IS NULL"),
    )
    op.drop_index(op.f("ix_outbox_image_group_id"), table_name="outbox")
    op.drop_table("outbox")
    op.drop_table("jobs")
    op.drop_index(op.f("ix_image_groups_status"), table_name="image_groups")
    op.drop_index(op.f("ix_image_groups_created_at"), table_name="image_groups")
    op.drop_table("image_groups")
    op.drop_table("event_deliveries")
    op.drop_index(op.f("ix_dead_letters_status"), table_name="dead_letters")
    op.drop_index(op.f("ix_dead_letters_event_id"), table_name="dead_letters")
    op.drop_table("dead_letters")
    op.drop_table("catalog_reservations")
