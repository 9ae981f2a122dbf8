"""The domain events an ImageGroup records as it moves, and the causes they carry.

The aggregate only records them (`ImageGroup.events`); the unit of work collects them from
the groups it handed out or was given and turns them into rows at commit: a StatusChanged
into a history row, a StageRequested into a follow-on in the outbox and the stage's
"requested" row, a StageReported into the stage's result row. StageEnded is what the
stage-time metric reads.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from domain.values import ImageGroupId, ImageGroupStatus, StageName, StageOutcome

#: The error code of a stage whose deadline passed with no result (docs/contract.md §4).
STAGE_TIMEOUT = "STAGE_TIMEOUT"


class CauseKind(enum.StrEnum):
    EVENT = "event"
    OPERATOR = "operator"
    DEADLINE = "deadline"


@dataclass(frozen=True, slots=True)
class TransitionCause:
    """Why a group moved: an incoming event, an operator's command, or a deadline passing.

    Stored with the transition and never rewritten, so a redeploy cannot hide why attempt 1
    failed. `kind` is None only for a move recorded before causes were (migration 0006 could
    not tell); a field that does not apply to the kind is None.
    """

    kind: CauseKind | None = None
    event_type: str | None = None
    stage: StageName | None = None
    attempt: int | None = None
    outcome: StageOutcome | None = None
    error_code: str | None = None
    error_summary: str | None = None
    command: str | None = None

    @classmethod
    def event(
        cls,
        event_type: str,
        stage: StageName,
        outcome: StageOutcome,
        *,
        attempt: int | None = None,
        error_code: str | None = None,
        error_summary: str | None = None,
    ) -> TransitionCause:
        return cls(CauseKind.EVENT, event_type, stage, attempt, outcome, error_code, error_summary)

    @classmethod
    def operator(cls, command: str, stage: StageName | None = None) -> TransitionCause:
        return cls(CauseKind.OPERATOR, stage=stage, command=command)

    @classmethod
    def deadline(cls, stage: StageName, attempt: int, deadline: datetime) -> TransitionCause:
        summary = f"no {stage} result for attempt {attempt} by its deadline {deadline.isoformat()}"
        return cls(
            CauseKind.DEADLINE,
            stage=stage,
            attempt=attempt,
            outcome=StageOutcome.FAILED,
            error_code=STAGE_TIMEOUT,
            error_summary=summary,
        )

    def on_attempt(self, attempt: int) -> TransitionCause:
        """This cause, naming the group's attempt when the caller could not (an unknown
        cause stays as it is)."""
        if self.attempt is not None or self.kind is None:
            return self
        return replace(self, attempt=attempt)


#: What a transition recorded without a cause carries.
UNKNOWN_CAUSE = TransitionCause()


@dataclass(frozen=True, slots=True)
class Transition:
    """One recorded status change of a group; `from_status` is None for its creation."""

    image_group_id: ImageGroupId
    from_status: ImageGroupStatus | None
    to_status: ImageGroupStatus
    event_id: str
    at: datetime
    cause: TransitionCause = UNKNOWN_CAUSE


@dataclass(frozen=True, slots=True)
class StatusChanged:
    """The group moved; its history keeps the transition, cause included."""

    transition: Transition


@dataclass(frozen=True, slots=True)
class StageRequested:
    """The group entered a stage's running status: that stage must be asked for.

    `event_id` is the transition's (what caused the request) and `at` its time; the
    correlation the causing event carried goes along with the request.
    """

    stage: StageName
    attempt: int
    event_id: str
    at: datetime
    correlation_id: str | None = None


@dataclass(frozen=True, slots=True)
class StageReported:
    """A stage's result as the job's stage record keeps it: reported by an event (the build
    that created the group included), or a failure by the stage's deadline passing."""

    stage: StageName
    outcome: StageOutcome
    attempt: int
    event_id: str
    at: datetime
    error_code: str | None = None
    error_summary: str | None = None
    detail: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class StageEnded:
    """A stage the group was waiting for ended: by its result, or by its deadline passing.

    `requested_at` is when the group entered the stage's running status: nothing else moves
    a group while it waits, so that is when the stage was requested.
    """

    stage: StageName
    attempt: int
    outcome: StageOutcome
    timed_out: bool
    requested_at: datetime
    at: datetime


#: Everything an aggregate records, in the order it happened.
DomainEvent = StatusChanged | StageRequested | StageReported | StageEnded
