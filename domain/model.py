"""The ImageGroup aggregate, its Image entities, and the one transition table they obey."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

# Re-exported: the aggregate's outputs were defined here before they had a module of their own.
from domain.changes import CauseKind, TransitionCause
from domain.changes import StageEnded as StageEnded
from domain.changes import StageRequest as StageRequest
from domain.changes import Transition as Transition
from domain.errors import InvalidStateTransitionError, NotOverdueError, StaleResultError
from domain.values import (
    ImageGroupId,
    ImageGroupStatus,
    RoleName,
    StageName,
    StageOutcome,
    check_name,
)

S = ImageGroupStatus


@dataclass(frozen=True, slots=True)
class StageFlow:
    """Where a stage may start, the status it runs in, and where its outcomes lead."""

    stage: StageName
    start_from: frozenset[ImageGroupStatus]
    running: ImageGroupStatus
    success: ImageGroupStatus
    failure: ImageGroupStatus

    def target(self, outcome: StageOutcome) -> ImageGroupStatus:
        return self.success if outcome is StageOutcome.SUCCEEDED else self.failure


STAGE_FLOW: Mapping[StageName, StageFlow] = MappingProxyType(
    {
        StageName.DEPLOY: StageFlow(
            StageName.DEPLOY, frozenset({S.BUILT, S.FAILED}), S.DEPLOYING, S.DEPLOYED, S.FAILED
        ),
        StageName.PXE_BOOT: StageFlow(
            StageName.PXE_BOOT, frozenset({S.DEPLOYED}), S.RESTARTING, S.RESTARTED, S.FAILED
        ),
        StageName.VALIDATE: StageFlow(
            StageName.VALIDATE, frozenset({S.RESTARTED}), S.VALIDATING, S.PASSED, S.FAILED
        ),
    }
)

#: Cleanup is refused while a stage runs (its result is still due) and once cleaned.
CLEANABLE: frozenset[ImageGroupStatus] = frozenset(
    {S.BUILT, S.DEPLOYED, S.RESTARTED, S.PASSED, S.FAILED}
)

#: The happy path; a status later in it has "already passed" the earlier ones.
FLOW_ORDER: tuple[ImageGroupStatus, ...] = (
    S.BUILT,
    S.DEPLOYING,
    S.DEPLOYED,
    S.RESTARTING,
    S.RESTARTED,
    S.VALIDATING,
    S.PASSED,
)


def _derive_allowed() -> Mapping[ImageGroupStatus, frozenset[ImageGroupStatus]]:
    moves: dict[ImageGroupStatus, set[ImageGroupStatus]] = {status: set() for status in S}
    for flow in STAGE_FLOW.values():
        for origin in flow.start_from:
            moves[origin].add(flow.running)
        moves[flow.running] |= {flow.success, flow.failure}
    for origin in CLEANABLE:
        moves[origin].add(S.CLEANED)
    return MappingProxyType({status: frozenset(to) for status, to in moves.items()})


#: Every legal move, derived from STAGE_FLOW and CLEANABLE so the two can never disagree.
ALLOWED_TRANSITIONS = _derive_allowed()


def next_stage(status: ImageGroupStatus) -> StageName | None:
    """The stage that follows a successful one (never a redeploy: FAILED waits for an operator)."""
    for flow in STAGE_FLOW.values():
        if status in flow.start_from and status is not S.FAILED:
            return flow.stage
    return None


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
    new_transitions: list[Transition] = field(default_factory=list)
    new_requests: list[StageRequest] = field(default_factory=list)
    new_stage_ends: list[StageEnded] = field(default_factory=list)

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
    ) -> ImageGroup:
        if not images:
            raise ValueError(f"image group {group_id} needs at least one image")
        group = cls(group_id, job_id, S.BUILT, tuple(images), created_at=at, updated_at=at)
        why = (cause or TransitionCause()).on_attempt(group.attempt)
        group.new_transitions.append(Transition(group_id, None, S.BUILT, event_id, at, why))
        return group

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
    ) -> None:
        """Enter the stage's running status; with a timeout, its result is due by at + timeout."""
        flow = _flow_of(stage)
        attempt = self.attempt + 1 if self.status is S.FAILED else self.attempt  # a redeploy
        self._move(flow.running, event_id, at, (cause or TransitionCause()).on_attempt(attempt))
        self.attempt = attempt
        self.deadline_at = None if timeout is None else at + timeout
        self.new_requests.append(StageRequest(stage, self.attempt))

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
        self._end(flow, StageOutcome.FAILED, cause, event_id=event_id, at=at)

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
    ) -> None:
        """Apply a stage result; raise StaleResultError for one the group no longer waits for."""
        flow = _flow_of(stage)
        self._check_awaited(flow, flow.target(outcome), attempt)
        self._end(flow, outcome, cause or TransitionCause(), event_id=event_id, at=at)

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
    ) -> None:
        requested_at = self.updated_at  # set when the group entered the running status
        self._move(flow.target(outcome), event_id, at, cause.on_attempt(self.attempt))
        timed_out = cause.kind is CauseKind.DEADLINE
        self.new_stage_ends.append(
            StageEnded(flow.stage, self.attempt, outcome, timed_out, requested_at, at)
        )

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
        self.new_transitions.append(Transition(self.id, self.status, target, event_id, at, cause))
        self.status = target
        self.updated_at = at
        self.deadline_at = None  # any move ends the wait; start() sets the next deadline


def _flow_of(stage: StageName) -> StageFlow:
    try:
        return STAGE_FLOW[stage]
    except KeyError:
        raise ValueError(f"{stage} is not a stage of an existing group") from None
