"""The ImageGroup aggregate and its Image entities; they obey the one transition table
(domain/flow.py) and record what happened as domain events (domain/changes.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from domain.changes import (
    CauseKind,
    DomainEvent,
    StageEnded,
    StageReported,
    StageRequested,
    StatusChanged,
    TransitionCause,
)

# Re-exported: the history's row was defined here before it had a module of its own.
from domain.changes import Transition as Transition
from domain.errors import InvalidStateTransitionError, NotOverdueError, StaleResultError
from domain.flow import ALLOWED_TRANSITIONS, FLOW_ORDER, STAGE_FLOW, StageFlow
from domain.values import (
    ImageGroupId,
    ImageGroupStatus,
    RoleName,
    StageName,
    StageOutcome,
    check_name,
)

S = ImageGroupStatus
E = TypeVar("E", StatusChanged, StageRequested, StageReported, StageEnded)


@dataclass(frozen=True, slots=True, eq=False)
class Image:
    """One image of a group; entity identity is its id."""

    id: str
    role: RoleName
    image_name: str

    def __post_init__(self) -> None:
        check_name(self.image_name, f"image_name for role {self.role}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Image) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


@dataclass(eq=False)
class ImageGroup:
    """Aggregate root: the group's status changes only through its named methods."""

    id: ImageGroupId
    job_id: str
    status: ImageGroupStatus
    images: tuple[Image, ...]
    created_at: datetime
    updated_at: datetime
    attempt: int = 1
    #: When the stage the group waits for must have answered; None while no stage runs.
    deadline_at: datetime | None = None
    #: What happened since the unit of work last collected it (domain/changes.py).
    events: list[DomainEvent] = field(default_factory=list)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImageGroup) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @classmethod
    def create(
        cls,
        group_id: ImageGroupId,
        job_id: str,
        images: Sequence[Image],
        *,
        event_id: str,
        at: datetime,
        cause: TransitionCause | None = None,
        detail: dict[str, Any] | None = None,
    ) -> ImageGroup:
        """A new BUILT group; built by a stage's result (the cause names stage and outcome),
        it records that result too, with its `detail`."""
        if not images:
            raise ValueError(f"image group {group_id} needs at least one image")
        group = cls(group_id, job_id, S.BUILT, tuple(images), created_at=at, updated_at=at)
        why = (cause or TransitionCause()).on_attempt(group.attempt)
        group.events.append(StatusChanged(Transition(group_id, None, S.BUILT, event_id, at, why)))
        if why.stage is not None and why.outcome is not None:
            attempt = why.attempt or group.attempt  # the result's, as it named it
            result = (why.stage, why.outcome, attempt)
            group.events.append(_reported(why, result, event_id, at, detail))
        return group

    def recorded(self, kind: type[E]) -> list[E]:
        """The events of one kind among those not collected yet, in order."""
        return [event for event in self.events if isinstance(event, kind)]

    # Named transitions: start a stage, finish it, clean up ----------------------------
    # Each records its cause with the move; one without an attempt gets the group's.
    def clean(self, *, event_id: str, at: datetime, cause: TransitionCause | None = None) -> None:
        self._move(S.CLEANED, event_id, at, cause or TransitionCause())

    def start(
        self,
        stage: StageName,
        *,
        event_id: str,
        at: datetime,
        timeout: timedelta | None = None,
        cause: TransitionCause | None = None,
        correlation_id: str | None = None,
    ) -> None:
        """Enter the stage's running status and request the stage (carrying the causing
        event's `correlation_id`); with a timeout, its result is due by at + timeout."""
        flow = _flow_of(stage)
        attempt = self.attempt + 1 if self.status is S.FAILED else self.attempt  # a redeploy
        self._move(flow.running, event_id, at, (cause or TransitionCause()).on_attempt(attempt))
        self.attempt = attempt
        self.deadline_at = None if timeout is None else at + timeout
        self.events.append(StageRequested(stage, attempt, event_id, at, correlation_id))

    def expire(self, stage: StageName, attempt: int, *, event_id: str, at: datetime) -> None:
        """The stage's deadline passed with no result: FAILED, as a failed result would.

        NotOverdueError when the group no longer waits for that stage and attempt, or its
        deadline has not passed at `at` (the caller re-checks under the row lock with this).
        """
        flow, deadline = _flow_of(stage), self.deadline_at
        why = None
        if self.status is not flow.running or attempt != self.attempt:
            why = f"it is {self.status}, attempt {self.attempt}"
        elif deadline is None or at < deadline:
            why = f"its deadline is {deadline}"
        if why is not None or deadline is None:
            raise NotOverdueError(str(self.id), stage, attempt, why or "it has no deadline")
        cause = TransitionCause.deadline(stage, attempt, deadline)
        self._end(flow, StageOutcome.FAILED, cause, event_id=event_id, at=at, detail=None)

    def running_stage(self) -> StageName | None:
        """The stage whose result the group waits for, if any."""
        return next((f.stage for f in STAGE_FLOW.values() if f.running is self.status), None)

    def finish(
        self,
        stage: StageName,
        outcome: StageOutcome,
        *,
        attempt: int | None,
        event_id: str,
        at: datetime,
        cause: TransitionCause | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Apply a stage result (its `detail` kept with the stage); raise StaleResultError
        for one the group no longer waits for."""
        flow = _flow_of(stage)
        self._check_awaited(flow, flow.target(outcome), attempt)
        why = cause or TransitionCause()
        self._end(flow, outcome, why, event_id=event_id, at=at, detail=detail)

    def _check_awaited(
        self, flow: StageFlow, target: ImageGroupStatus, attempt: int | None
    ) -> None:
        stage = flow.stage
        if attempt is not None and attempt < self.attempt:
            raise StaleResultError(
                str(self.id),
                self.status,
                stage,
                f"attempt {attempt} is older than current attempt {self.attempt}",
            )
        if attempt is not None and attempt > self.attempt:
            raise InvalidStateTransitionError(
                str(self.id),
                self.status,
                target,
                ALLOWED_TRANSITIONS[self.status],
                f"attempt {attempt} was never requested (current attempt {self.attempt})",
            )
        if self.status is not flow.running:
            if self._has_left(flow.running):
                raise StaleResultError(
                    str(self.id), self.status, stage, f"the group already left {flow.running}"
                )
            raise InvalidStateTransitionError(
                str(self.id),
                self.status,
                target,
                ALLOWED_TRANSITIONS[self.status],
                f"a {stage} result needs {flow.running}, which the group has not reached",
            )

    def _end(
        self,
        flow: StageFlow,
        outcome: StageOutcome,
        cause: TransitionCause,
        *,
        event_id: str,
        at: datetime,
        detail: dict[str, Any] | None,
    ) -> None:
        requested_at = self.updated_at  # set when the group entered the running status
        cause = cause.on_attempt(self.attempt)
        self._move(flow.target(outcome), event_id, at, cause)
        timed_out = cause.kind is CauseKind.DEADLINE
        self.events.append(
            StageEnded(flow.stage, self.attempt, outcome, timed_out, requested_at, at)
        )
        result = (flow.stage, outcome, self.attempt)
        self.events.append(_reported(cause, result, event_id, at, detail))

    def _has_left(self, status: ImageGroupStatus) -> bool:
        if self.status.is_terminal():
            return True
        return FLOW_ORDER.index(self.status) > FLOW_ORDER.index(status)

    def _move(
        self, target: ImageGroupStatus, event_id: str, at: datetime, cause: TransitionCause
    ) -> None:
        allowed = ALLOWED_TRANSITIONS[self.status]
        if target not in allowed:
            raise InvalidStateTransitionError(str(self.id), self.status, target, allowed)
        move = Transition(self.id, self.status, target, event_id, at, cause)
        self.events.append(StatusChanged(move))
        self.status = target
        self.updated_at = at
        self.deadline_at = None  # any move ends the wait; start() sets the next deadline


def _reported(
    cause: TransitionCause,
    result: tuple[StageName, StageOutcome, int],
    event_id: str,
    at: datetime,
    detail: dict[str, Any] | None,
) -> StageReported:
    """The stage's (stage, outcome, attempt), with the error the cause names."""
    stage, outcome, attempt = result
    error_code, error_summary = cause.error_code, cause.error_summary
    return StageReported(stage, outcome, attempt, event_id, at, error_code, error_summary, detail)


def _flow_of(stage: StageName) -> StageFlow:
    try:
        return STAGE_FLOW[stage]
    except KeyError:
        raise ValueError(f"{stage} is not a stage of an existing group") from None
