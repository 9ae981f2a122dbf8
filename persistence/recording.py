"""What a unit of work stores at commit from the domain events its groups recorded.

The unit of work hands its groups out through SeenGroups, which remembers each one; at
commit, EventRecorder takes every event they recorded (and clears them) and writes it
through the unit of work's repositories, before the COMMIT and in this order: the history
rows, the outbox rows, then the stage rows in one statement (on PostgreSQL they all wait to
travel with the COMMIT: persistence/batching.py). The wire body of a follow-on is not ours:
the worker hands the unit of work its FollowOn builder (workers/outbox/follow_ons.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from domain import (
    DomainEvent,
    ImageGroup,
    ImageGroupId,
    ImageGroupRepository,
    ImageGroupStatus,
    OutboxMessage,
    Page,
    StageRecord,
    StageReported,
    StageRepository,
    StageRequested,
    StageState,
    StatusChanged,
    Transition,
)
from persistence.ports import HistoryRepository, OutboxRepository

#: Builds the follow-on event that asks for a requested stage, as the outbox stores it.
FollowOn = Callable[[ImageGroup, StageRequested], OutboxMessage]


class NoFollowOns:
    """A unit of work given no builder: a stage request is a bug, said at the commit."""

    def __call__(self, group: ImageGroup, requested: StageRequested) -> OutboxMessage:
        raise RuntimeError(
            f"{group.id} requested {requested.stage}, but this unit of work was given no "
            "follow-on builder (workers.outbox.follow_ons.FollowOns)"
        )


@dataclass
class Rows:
    history: list[Transition] = field(default_factory=list)
    outbox: list[OutboxMessage] = field(default_factory=list)
    stages: list[StageRecord] = field(default_factory=list)


class EventRecorder:
    """The groups a unit of work saw since its last commit or rollback, and what their
    events became: `stored`, the follow-ons its commits wrote, in order."""

    def __init__(self, follow_on: FollowOn | None = None) -> None:
        self.follow_on: FollowOn = follow_on or NoFollowOns()
        self.seen: list[ImageGroup] = []
        self.stored: list[OutboxMessage] = []

    def see(self, group: ImageGroup) -> ImageGroup:
        if not any(seen is group for seen in self.seen):
            self.seen.append(group)
        return group

    def forget(self) -> None:
        self.seen.clear()

    def store(
        self, history: HistoryRepository, outbox: OutboxRepository, stages: StageRepository
    ) -> None:
        """Write the rows of every event recorded since; called just before the COMMIT."""
        rows = Rows()
        for group in self.seen:
            events, group.events = group.events, []
            for event in events:
                self._add(rows, group, event)
        self.seen.clear()
        history.add(rows.history)
        for message in rows.outbox:
            outbox.add(message)
        stages.upsert_many(rows.stages)
        self.stored.extend(rows.outbox)

    def _add(self, rows: Rows, group: ImageGroup, event: DomainEvent) -> None:
        if isinstance(event, StatusChanged):
            rows.history.append(event.transition)
        elif isinstance(event, StageRequested):
            message = self.follow_on(group, event)
            rows.outbox.append(message)
            rows.stages.append(_requested(group, event, message))
        elif isinstance(event, StageReported):
            rows.stages.append(_result(group, event))
        # StageEnded writes nothing: the stage-time metric reads it off the group


def _requested(group: ImageGroup, event: StageRequested, message: OutboxMessage) -> StageRecord:
    """The stage's row names the request (a result that answers another one is stale)."""
    return StageRecord(
        job_id=group.job_id,
        stage=event.stage,
        state=StageState.REQUESTED,
        attempt=event.attempt,
        event_id=message.event_id,
        updated_at=event.at,
    )


def _result(group: ImageGroup, event: StageReported) -> StageRecord:
    return StageRecord(
        job_id=group.job_id,
        stage=event.stage,
        state=StageState(event.outcome.value),
        attempt=event.attempt,
        event_id=event.event_id,
        updated_at=event.at,
        result_detail=event.detail,
        error_code=event.error_code,
        error_summary=event.error_summary,
    )


class SeenGroups:
    """The unit of work's group repository: every group it hands out or is given is seen,
    so its events are stored at commit."""

    def __init__(self, groups: ImageGroupRepository, recorder: EventRecorder) -> None:
        self._groups = groups
        self._see = recorder.see

    def save(self, group: ImageGroup) -> None:
        self._groups.save(group)
        self._see(group)

    def update_status(self, group: ImageGroup) -> None:
        self._groups.update_status(self._see(group))

    def find_by_id(self, group_id: ImageGroupId) -> ImageGroup | None:
        return self._seen(self._groups.find_by_id(group_id))

    def find_by_job_id(self, job_id: str) -> ImageGroup | None:
        return self._seen(self._groups.find_by_job_id(job_id))

    def find_by_job_id_for_update(self, job_id: str) -> ImageGroup | None:
        return self._seen(self._groups.find_by_job_id_for_update(job_id))

    def find_by_id_for_update(self, group_id: ImageGroupId) -> ImageGroup | None:
        return self._seen(self._groups.find_by_id_for_update(group_id))

    def list_by_status(
        self,
        status: ImageGroupStatus | None,
        *,
        limit: int,
        offset: int,
        overdue_at: datetime | None = None,
    ) -> Page[ImageGroup]:
        page = self._groups.list_by_status(
            status, limit=limit, offset=offset, overdue_at=overdue_at
        )
        self._all_seen(page.items)
        return page

    def claim_overdue(self, now: datetime, *, limit: int) -> list[ImageGroup]:
        claimed = self._groups.claim_overdue(now, limit=limit)
        self._all_seen(claimed)
        return claimed

    def exists(self, group_id: ImageGroupId) -> bool:
        return self._groups.exists(group_id)

    def _seen(self, group: ImageGroup | None) -> ImageGroup | None:
        return None if group is None else self._see(group)

    def _all_seen(self, groups: Sequence[ImageGroup]) -> None:
        for group in groups:
            self._see(group)
