"""The image group: its values, its state machine, the aggregate that obeys it, the domain
events it records, and a catalog as reserved for one job.

- Values: the ids, names and enumerations, each checked where it is built (`check_name`).
- The one transition table: where each stage may start, the status it runs in, where its
  outcomes lead, and which statuses may be cleaned; every legal move is derived from it.
- The domain events an ImageGroup records as it moves, and the causes they carry. The
  aggregate only records them (`ImageGroup.events`); the unit of work collects them from the
  groups it handed out or was given and turns them into rows at commit: a StatusChanged into
  a history row, a StageRequested into a follow-on in the outbox and the stage's "requested"
  row, a StageReported into the stage's result row. StageEnded is what the stage-time metric
  reads.
- The ImageGroup aggregate and its Image entities.
- A parsed catalog as reserved for one job: the group id it claims and the roles it builds.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, TypeVar

from domain.errors import InvalidStateTransitionError, NotOverdueError, StaleResultError

MAX_ID_LENGTH = 128


class InvalidValueError(ValueError):
    """A value object was built from input that breaks one of its rules."""


def check_name(value: object, what: str, *, max_length: int | None = None) -> str:
    """The rule every name obeys: a non-blank, trimmed string with no control characters.

    Control, format, line/paragraph separators and lone surrogates are refused: they break
    logs and terminals, and PostgreSQL cannot store a NUL or a lone surrogate at all.
    """
    if not isinstance(value, str):
        raise InvalidValueError(f"{what} must be a string, got {type(value).__name__}")
    if value == "" or value.isspace():
        raise InvalidValueError(f"{what} must not be empty or blank")
    if max_length is not None and len(value) > max_length:
        raise InvalidValueError(f"{what} must be at most {max_length} characters, got {len(value)}")
    if value != value.strip():
        raise InvalidValueError(f"{what} must not have leading or trailing whitespace: {value!r}")
    for position, char in enumerate(value):
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            raise InvalidValueError(
                f"{what} must not contain control characters "
                f"(found {char!r} at position {position})"
            )
    return value


def _check_identifier(value: object, what: str) -> str:
    return check_name(value, what, max_length=MAX_ID_LENGTH)


@dataclass(frozen=True, slots=True)
class ImageGroupId:
    """The catalog Identifier that names one image group."""

    value: str

    def __post_init__(self) -> None:
        _check_identifier(self.value, "image_group_id")

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class RoleName:
    """A functional role of the catalog (one image per role)."""

    value: str

    def __post_init__(self) -> None:
        _check_identifier(self.value, "role")

    def __str__(self) -> str:
        return self.value


class ImageGroupStatus(enum.StrEnum):
    BUILT = "BUILT"
    DEPLOYING = "DEPLOYING"
    DEPLOYED = "DEPLOYED"
    RESTARTING = "RESTARTING"
    RESTARTED = "RESTARTED"
    VALIDATING = "VALIDATING"
    PASSED = "PASSED"
    FAILED = "FAILED"
    CLEANED = "CLEANED"

    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({ImageGroupStatus.PASSED, ImageGroupStatus.FAILED, ImageGroupStatus.CLEANED})


class PipelinePhase(enum.StrEnum):
    BUILD = "BUILD"
    DEPLOY = "DEPLOY"


class StageOutcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class StageName(enum.StrEnum):
    BUILD_IMAGE = "build-image"
    BUILD_IMAGE_X86_64 = "build-image-x86_64"
    BUILD_IMAGE_AARCH64 = "build-image-aarch64"
    DEPLOY = "deploy"
    PXE_BOOT = "pxe-boot"
    VALIDATE = "validate"

    @classmethod
    def parse(cls, text: str) -> StageName:
        """Read a stage name as publishers spell it, aliases included (see STAGE_ALIASES)."""
        alias = STAGE_ALIASES.get(text)
        if alias is not None:
            return alias
        try:
            return cls(text)
        except ValueError:
            known = ", ".join(cls.spellings())
            raise InvalidValueError(f"unknown stage {text!r}; expected one of {known}") from None

    @classmethod
    def spellings(cls) -> list[str]:
        """Every stage name a publisher may send: the stages, then their aliases."""
        return [stage.value for stage in cls] + list(STAGE_ALIASES)

    def is_build(self) -> bool:
        return self in _BUILD_STAGES


#: Old names publishers still send; `restart` is what pxe-boot used to be called.
STAGE_ALIASES: dict[str, StageName] = {"restart": StageName.PXE_BOOT}

_BUILD_STAGES = frozenset(
    {StageName.BUILD_IMAGE, StageName.BUILD_IMAGE_X86_64, StageName.BUILD_IMAGE_AARCH64}
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
    #: What happened since the unit of work last collected it (domain/model.py).
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


def check_roles(roles: Sequence[str], role_images: Mapping[str, str] | None) -> None:
    """The catalog's rule: at least one role, each once, and images only for those roles."""
    if not roles:
        raise InvalidValueError("a catalog needs at least one role")
    repeated = sorted({r for r in roles if roles.count(r) > 1})
    if repeated:
        raise InvalidValueError(f"roles must be unique; repeated: {repeated}")
    unknown = sorted(set(role_images or {}) - set(roles))
    if unknown:
        raise InvalidValueError(f"role_images names roles that are not in roles: {unknown}")


@dataclass(frozen=True, slots=True)
class CatalogReservation:
    """Holding this row makes `image_group_id` belong to `job_id` and to no other job."""

    image_group_id: ImageGroupId
    job_id: str
    roles: tuple[RoleName, ...]
    role_images: Mapping[str, str] = field(default_factory=dict)
    catalog_name: str | None = None
    catalog_version: str | None = None
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        check_roles([r.value for r in self.roles], self.role_images)
        object.__setattr__(self, "role_images", MappingProxyType(dict(self.role_images)))

    def image_name(self, role: RoleName) -> str:
        return self.role_images.get(role.value, f"{role.value}.img")

    def images(self, new_id: Callable[[], str]) -> tuple[Image, ...]:
        return tuple(Image(new_id(), role, self.image_name(role)) for role in self.roles)

    def same_catalog(self, other: CatalogReservation) -> bool:
        return (
            self.image_group_id == other.image_group_id
            and self.job_id == other.job_id
            and self.roles == other.roles
            and dict(self.role_images) == dict(other.role_images)
        )
