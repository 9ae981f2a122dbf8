"""What every handler shares: its dependencies, what it returns, and the rows a change writes."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from domain import (
    ImageGroup,
    ImageGroupStatus,
    OutboxMessage,
    StageEnded,
    StageName,
    StageRecord,
    StageState,
    UnitOfWork,
)
from workers.follow_on import Cause, request_message


@dataclass(frozen=True)
class Deps:
    """What a handler needs; built once per process by the composition root (runtime.py)."""

    new_uow: Callable[[], UnitOfWork]
    clock: Callable[[], datetime]
    new_id: Callable[[], str]
    auto_advance: bool = True
    #: How long each requested stage may go unanswered; a stage not named here has no
    #: deadline (the worker names all three, from IMAGEGROUPS_STAGE_TIMEOUT_*).
    stage_timeouts: Mapping[StageName, timedelta] = field(default_factory=dict)

    def timeout(self, stage: StageName) -> timedelta | None:
        return self.stage_timeouts.get(stage)


class EventOutcome(enum.StrEnum):
    """What an incoming event came to, as the inbox records it (dead letters aside)."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    STALE = "stale"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one event or command came to; the task returns it, so Flower shows it."""

    outcome: EventOutcome
    event_id: str
    image_group_id: str | None = None
    status: ImageGroupStatus | None = None
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "event_id": self.event_id,
            "image_group_id": self.image_group_id,
            "status": None if self.status is None else self.status.value,
            "detail": self.detail,
        }


@dataclass
class Result:
    outcome: Outcome
    messages: list[OutboxMessage] = field(default_factory=list)
    stage_ends: list[StageEnded] = field(default_factory=list)  # for the stage-time metric


def persist_change(
    uow: UnitOfWork,
    group: ImageGroup | None,
    cause: Cause,
    deps: Deps,
    now: datetime,
    stages: list[StageRecord] | None = None,
) -> list[OutboxMessage]:
    """History, outbox and stage rows of a change, in the caller's transaction."""
    stages = list(stages or [])
    messages: list[OutboxMessage] = []
    if group is not None:
        uow.history.add(group.new_transitions)
        for request in group.new_requests:
            message = request_message(group, request, cause=cause, event_id=deps.new_id(), at=now)
            uow.outbox.add(message)
            messages.append(message)
            stages.append(_requested(group, request.stage, request.attempt, message, now))
    uow.stages.upsert_many(stages)
    return messages


def _requested(
    group: ImageGroup, stage: StageName, attempt: int, message: OutboxMessage, now: datetime
) -> StageRecord:
    return StageRecord(
        job_id=group.job_id,
        stage=stage,
        state=StageState.REQUESTED,
        attempt=attempt,
        event_id=message.event_id,
        updated_at=now,
    )
