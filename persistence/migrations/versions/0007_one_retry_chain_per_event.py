"""One retry chain per event: the copy whose deliveries are counted is kept with the count.

A stage result published in several copies before its catalog used to run one retry chain per
copy, all counted against the event's one budget of IMAGEGROUPS_MAX_ATTEMPTS deliveries: three
copies used it up three times as fast, and the event could be dead-lettered while its catalog
was still on the way. `event_deliveries.holder` names the copy (its Celery task id) whose
counted deliveries are the event's chain; a counted delivery of any other copy ends without
being counted or handled, since the holder's chain gives the event its one outcome.

Rows counted before this revision keep a NULL holder: the next copy counted claims it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 19:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("event_deliveries") as batch:
        batch.add_column(sa.Column("holder", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("event_deliveries") as batch:
        batch.drop_column("holder")
