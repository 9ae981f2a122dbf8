"""What the metrics endpoint reads from the database at scrape time: a few indexed counts.

The outbox's unsent rows come from its partial index (ix_outbox_unsent), the overdue groups
from the deadline index (ix_image_groups_deadline) and the groups per status from the status
index: a scrape costs three short reads however large the tables grow.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, select

from persistence.models import ImageGroupRow, OutboxRow


@dataclass(frozen=True, slots=True)
class Snapshot:
    outbox_unsent: int
    oldest_unsent_at: datetime | None
    groups_by_status: dict[str, int]
    overdue_groups: int


def snapshot(engine: Engine, now: datetime) -> Snapshot:
    with engine.connect() as conn:
        unsent, oldest = conn.execute(
            select(func.count(), func.min(OutboxRow.created_at)).where(OutboxRow.sent_at.is_(None))
        ).one()
        by_status = conn.execute(
            select(ImageGroupRow.status, func.count()).group_by(ImageGroupRow.status)
        ).all()
        overdue = conn.scalar(
            select(func.count())
            .select_from(ImageGroupRow)
            .where(ImageGroupRow.deadline_at.is_not(None), ImageGroupRow.deadline_at <= now)
        )
    return Snapshot(
        outbox_unsent=int(unsent),
        oldest_unsent_at=oldest,
        groups_by_status={status: int(count) for status, count in by_status},
        overdue_groups=int(overdue or 0),
    )
