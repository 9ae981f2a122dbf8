"""What `imagegroups trace` reads about one group, from the in-memory store (as SQL finds it)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from domain import DeadLetter, ImageGroupId, InboxRecord, OutboxMessage
from persistence.memory_state import MemoryState

CATALOG_TASK = "imagegroups.catalog_parsed"


class MemoryTraceRepository:
    def __init__(self, state: MemoryState) -> None:
        self.state = state

    def inbox(self, job_id: str, event_ids: Sequence[str]) -> list[InboxRecord]:
        wanted = set(event_ids)
        found = [
            r
            for r in self.state.inbox_records.values()
            if r.event_id in wanted
            or (r.job_id == job_id and (r.outcome != "applied" or r.task_name == CATALOG_TASK))
        ]
        return sorted(found, key=lambda r: (r.processed_at, r.event_id))

    def follow_ons(
        self, group_id: ImageGroupId, written: Sequence[datetime]
    ) -> list[OutboxMessage]:
        times = set(written)
        found = [
            m
            for m in self.state.outbox.values()
            if m.image_group_id == group_id.value and m.created_at in times
        ]
        return sorted(found, key=lambda m: (m.created_at, m.event_id))

    def dead_letters(self, job_id: str, event_ids: Sequence[str]) -> list[DeadLetter]:
        wanted = set(event_ids)
        found = [
            d
            for d in self.state.dead_letters.values()
            if job_id in d.body or (d.event_id is not None and d.event_id in wanted)
        ]
        return sorted(found, key=lambda d: d.id or 0)
