"""What every handler shares: its dependencies and what it returns.

A handler writes no history, stage or outbox row: the aggregate records what happened
(ImageGroup.events) and the unit of work stores it at commit.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from domain import ImageGroup, ImageGroupStatus, OutboxMessage, StageEnded, StageName, UnitOfWork


@dataclass(frozen=True)
class Deps:
    """What a handler needs; built once per process by the composition root
    (workers/runtime/root.py)."""

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


def stage_ends(group: ImageGroup | None) -> list[StageEnded]:
    """The stages the group's change ended, for the stage-time metric (read before the
    commit, which collects the group's events)."""
    return [] if group is None else group.recorded(StageEnded)
