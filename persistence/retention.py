"""Retention: rows that only bookkeeping needs go once they are old enough, in small batches.

- the inbox (`processed_events`) and the delivery counts, after the idempotency window: an
  event delivered again later is no longer known as a duplicate, and the state machine judges
  it instead (a result for a state the group has left is `stale`; the same catalog again is
  `duplicate`), so a transition is still never applied twice;
- outbox rows once sent, after a day (kept that long to answer "was it sent?");
- dead letters an operator has replayed or discarded, after a month. Waiting ones stay.

History and groups are not touched: they are the record an operator reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, delete, select
from sqlalchemy.orm import InstrumentedAttribute

from persistence.models import Base, DeadLetterRow, DeliveryRow, OutboxRow, ProcessedEventRow


@dataclass(frozen=True)
class Cutoffs:
    """Rows older than these go."""

    inbox: datetime
    outbox: datetime
    dead_letters: datetime


def prune(engine: Engine, cutoffs: Cutoffs, *, batch: int = 5000) -> dict[str, int]:
    """Delete what is past its cutoff, `batch` rows per short transaction; returns counts."""
    finished = DeadLetterRow.status.in_(("replayed", "discarded"))
    targets: list[tuple[type[Base], InstrumentedAttribute[Any], ColumnElement[bool]]] = [
        (ProcessedEventRow, ProcessedEventRow.event_id,
         ProcessedEventRow.processed_at < cutoffs.inbox),
        (DeliveryRow, DeliveryRow.key, DeliveryRow.last_at < cutoffs.inbox),
        (OutboxRow, OutboxRow.event_id,
         OutboxRow.sent_at.is_not(None) & (OutboxRow.created_at < cutoffs.outbox)),
        (DeadLetterRow, DeadLetterRow.id,
         finished & (DeadLetterRow.last_failed_at < cutoffs.dead_letters)),
    ]  # fmt: skip
    return {
        model.__tablename__: _delete_all(engine, model, key, where, batch)
        for model, key, where in targets
    }


def _delete_all(
    engine: Engine,
    model: type[Base],
    key: InstrumentedAttribute[Any],
    where: ColumnElement[bool],
    batch: int,
) -> int:
    removed = 0
    while True:
        # A bounded batch per transaction: no long lock, no long transaction for the workers.
        chosen = select(key).where(where).limit(batch).scalar_subquery()
        with engine.begin() as conn:
            count = conn.execute(delete(model).where(key.in_(chosen))).rowcount
        removed += count
        if count < batch:
            return removed
