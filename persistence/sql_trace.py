"""What `imagegroups trace` reads about one group, in SQL: each query rides an index.

The inbox rows of applied stage results are found by the event_ids the history holds (the
primary key); the rest by job through a partial index that holds only those rows. A group's
follow-ons were written in the transaction of a transition, at that transition's time, so
they are found by the group and those times (the outbox's BRIN index on `created_at`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, or_, select

from domain import DeadLetter, ImageGroupId, InboxRecord, OutboxMessage
from persistence import mappers
from persistence.batching import BatchingConnection
from persistence.models import (
    UNNAMED_BY_HISTORY,
    DeadLetterRow,
    OutboxRow,
    ProcessedEventRow,
)


class SqlTraceRepository:
    def __init__(self, conn: BatchingConnection) -> None:
        self.conn = conn

    def inbox(self, job_id: str, event_ids: Sequence[str]) -> list[InboxRecord]:
        row = ProcessedEventRow
        unnamed = and_(row.job_id == job_id, UNNAMED_BY_HISTORY)
        where = or_(unnamed, row.event_id.in_(list(event_ids))) if event_ids else unnamed
        rows = self.conn.execute(select(row).where(where).order_by(row.processed_at, row.event_id))
        return [mappers.inbox_to_entity(r) for r in rows]

    def follow_ons(
        self, group_id: ImageGroupId, written: Sequence[datetime]
    ) -> list[OutboxMessage]:
        if not written:
            return []
        rows = self.conn.execute(
            select(OutboxRow)
            .where(
                OutboxRow.image_group_id == group_id.value,
                OutboxRow.created_at.in_(sorted(set(written))),
            )
            .order_by(OutboxRow.created_at, OutboxRow.event_id)
        )
        return [mappers.outbox_to_entity(r) for r in rows]

    def dead_letters(self, job_id: str, event_ids: Sequence[str]) -> list[DeadLetter]:
        # The dead-letter store is small (an operator works through it): a scan of the
        # bodies for the job's id finds the letters whose event the inbox never held.
        named = DeadLetterRow.body.contains(job_id, autoescape=True)
        if event_ids:
            named = or_(named, DeadLetterRow.event_id.in_(list(event_ids)))
        rows = self.conn.execute(select(DeadLetterRow).where(named).order_by(DeadLetterRow.id))
        return [mappers.dead_letter_to_entity(r) for r in rows]
