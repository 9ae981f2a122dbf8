"""Handlers: plain functions, one unit of work (one transaction) per event or command.

Each takes a command in the domain's vocabulary (domain/ports.py) and its dependencies,
and returns what became of it with the follow-on messages its transaction wrote to the
outbox; publishing them is the caller's next step (workers/runtime/root.py).

What every handler shares: its dependencies and what it returns.

A handler writes no history, stage or outbox row: the aggregate records what happened
(ImageGroup.events) and the unit of work stores it at commit.

The incoming events: a catalog parsed, and a stage finished; each one transaction.

Every handler claims the event in the inbox first (a repeat is a duplicate), then takes its
row lock and asks the aggregate for the transition; the commit stores what the aggregate
recorded (history, stages, the outbox).
Lock order everywhere: the catalog reservation row, then the group row.

Stage deadlines: a group whose requested stage went unanswered past its deadline FAILS.

Run by the worker's deadline sweep (workers/runtime/housekeeping.py), never by an event. One unit
of work locks the overdue groups no other sweeper holds (SKIP LOCKED), asks each aggregate
to expire its stage (which re-checks status, attempt and deadline under the lock); its
commit stores the FAILED transition, its history row and the stage row in one transaction.
There is no follow-on: a FAILED group waits for an operator's redeploy.

Operator commands: request the next stage of a group, or mark it cleaned.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from domain import (
    CatalogConflictError,
    CatalogNotParsedError,
    CatalogReservation,
    DuplicateImageGroupError,
    EventIds,
    GroupNotCreatedError,
    ImageGroup,
    ImageGroupId,
    ImageGroupMismatchError,
    ImageGroupNotFoundError,
    ImageGroupStatus,
    InboxRecord,
    JobRecord,
    NotOverdueError,
    OutboxMessage,
    PipelinePhase,
    RecordStageResult,
    ReserveCatalog,
    RowTaken,
    StageEnded,
    StageName,
    StageOutcome,
    StageRecord,
    StageState,
    StaleResultError,
    TransitionCause,
    UnitOfWork,
    next_stage,
)
from workers.messages import CATALOG_PARSED, STAGE_FINISHED


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


@dataclass(frozen=True, slots=True)
class Expired:
    """One stage the sweep failed for its deadline; `event_id` names the transition."""

    image_group_id: str
    event_id: str
    deadline_at: datetime
    ended: StageEnded


def expire_overdue(*, deps: Deps, limit: int = 100) -> list[Expired]:
    """FAIL up to `limit` groups whose deadline has passed; what was expired, in order."""
    now = deps.clock()
    expired: list[Expired] = []
    with deps.new_uow() as uow:
        for group in uow.groups.claim_overdue(now, limit=limit):
            deadline, stage = group.deadline_at, group.running_stage()
            if deadline is None or stage is None:
                continue  # not waiting for a stage: nothing is due (the lock re-read it)
            command_id = deps.new_id()
            try:
                group.expire(stage, group.attempt, event_id=command_id, at=now)
            except NotOverdueError:
                continue
            uow.groups.update_status(group)
            expired.append(Expired(group.id.value, command_id, deadline, stage_ends(group)[-1]))
        if expired:
            uow.commit()
    return expired


APPLIED, DUPLICATE, STALE = EventOutcome.APPLIED, EventOutcome.DUPLICATE, EventOutcome.STALE


def handle_catalog_parsed(command: ReserveCatalog, *, deps: Deps) -> Result:
    try:
        return _reserve_new(command, deps)
    except RowTaken:
        # The event, or a reservation under its id or its job, was there already, and
        # nothing was written: the long way claims and reserves one at a time, and says
        # which it was (a duplicate, the same catalog again, or a conflict).
        return _catalog_parsed(command, deps)


def _reserve_new(command: ReserveCatalog, deps: Deps) -> Result:
    """The usual catalog, new to the inbox and to the reservations: its claim, reservation
    and job row go with the COMMIT, in one round trip."""
    ids, now = command.ids, deps.clock()
    reservation = replace(command.catalog, created_at=now)
    with deps.new_uow() as uow:
        uow.inbox.claim_late(_record(ids, CATALOG_PARSED.task, now))
        uow.catalogs.reserve_late(reservation)
        uow.jobs.upsert(JobRecord(ids.job_id, PipelinePhase.BUILD), now)
        uow.commit()
    return Result(Outcome(APPLIED, ids.event_id, reservation.image_group_id.value))


def _catalog_parsed(command: ReserveCatalog, deps: Deps) -> Result:
    ids, now = command.ids, deps.clock()
    reservation = replace(command.catalog, created_at=now)
    group_id = reservation.image_group_id.value
    with deps.new_uow() as uow:
        if not _claim(uow, ids, CATALOG_PARSED.task, now):
            return Result(Outcome(DUPLICATE, ids.event_id, group_id))
        held = uow.catalogs.reserve(reservation)
        if held is None:
            uow.jobs.upsert(JobRecord(ids.job_id, PipelinePhase.BUILD), now)
            outcome = Outcome(APPLIED, ids.event_id, group_id)
        elif held.same_catalog(reservation):
            uow.inbox.set_outcome(ids.event_id, DUPLICATE)
            outcome = Outcome(DUPLICATE, ids.event_id, group_id, detail="already reserved")
        else:
            # The same catalog again is a no-op; another one must not pass silently.
            raise CatalogConflictError(group_id, ids.job_id)
        uow.commit()
    return Result(outcome)


def handle_stage_finished(command: RecordStageResult, *, deps: Deps) -> Result:
    try:
        return _stage_finished(command, deps, late_insert=True)
    except RowTaken:
        # A build result whose group's INSERT, sent with the COMMIT, found a group already
        # there (the job's, or another job's under the id): nothing was written, and the
        # result is handled again with the INSERT on its own, which tells which it was.
        return _stage_finished(command, deps, late_insert=False)


def _stage_finished(command: RecordStageResult, deps: Deps, *, late_insert: bool) -> Result:
    event_id, now = command.ids.event_id, deps.clock()
    given = None if command.image_group_id is None else command.image_group_id.value
    with deps.new_uow() as uow:
        claimed = _claim_later(uow, command.ids, STAGE_FINISHED.task, now)
        # the lock travels with the claim: one round trip
        apply = _lock_for(uow, command, late_insert=late_insert)
        if not _settled(uow, claimed):
            return Result(Outcome(DUPLICATE, event_id, given))
        why = _cause_of(command)
        try:
            group = apply(uow, command, why, deps, now)
        except StaleResultError as stale:
            uow.inbox.set_outcome(event_id, STALE)
            uow.commit()
            return Result(Outcome(STALE, event_id, stale.image_group_id, detail=str(stale)))
        if group is None:  # a failed build: a stage row, and no group to record it
            uow.stages.upsert_many([_stage_result(command, now)])
        ends = stage_ends(group)
        uow.commit()
    if group is None:
        return Result(Outcome(APPLIED, event_id), list(uow.follow_ons))
    outcome = Outcome(APPLIED, event_id, group.id.value, group.status)
    return Result(outcome, list(uow.follow_ons), ends)


def _claim(uow: UnitOfWork, ids: EventIds, task_name: str, now: datetime) -> bool:
    return _settled(uow, _claim_later(uow, ids, task_name, now))


def _claim_later(
    uow: UnitOfWork, ids: EventIds, task_name: str, now: datetime
) -> Callable[[], bool]:
    return uow.inbox.claim_later(_record(ids, task_name, now))


def _record(ids: EventIds, task_name: str, now: datetime) -> InboxRecord:
    """The inbox row of an event applied by this delivery."""
    return InboxRecord(
        ids.event_id, task_name, APPLIED, now, ids.job_id, ids.causation_id, ids.delivery
    )


def _settled(uow: UnitOfWork, claimed: Callable[[], bool]) -> bool:
    """Whether the claim is this event's first; a duplicate's count is committed at once
    (the same round trip the rollback would have taken), so a trace can show it."""
    if claimed():
        return True
    uow.commit()
    return False


Apply = Callable[
    [UnitOfWork, RecordStageResult, TransitionCause, Deps, datetime], ImageGroup | None
]


def _lock_for(uow: UnitOfWork, command: RecordStageResult, *, late_insert: bool) -> Apply:
    """Take the row lock the result is applied under, after the claim (the lock order); a
    duplicate holds it only until its commit. The reservation lock serialises the creation
    of the job's group (no group row to lock yet)."""
    job_id = command.ids.job_id
    if command.stage.is_build():
        reservation = uow.catalogs.find_by_job_id_for_update(job_id)
        return partial(_apply_build_result, reservation=reservation, late_insert=late_insert)
    return partial(_apply_stage_result, group=uow.groups.find_by_job_id_for_update(job_id))


def _cause_of(command: RecordStageResult) -> TransitionCause:
    """The event, as each transition it causes records it (the aggregate adds the attempt
    when the event named none)."""
    return TransitionCause.event(
        STAGE_FINISHED.event_type,
        command.stage,
        command.outcome,
        attempt=command.attempt,
        error_code=command.error_code,
        error_summary=command.error_summary,
    )


def _apply_build_result(
    uow: UnitOfWork,
    command: RecordStageResult,
    cause: TransitionCause,
    deps: Deps,
    now: datetime,
    *,
    reservation: CatalogReservation | None,
    late_insert: bool,
) -> ImageGroup | None:
    event_id, job_id = command.ids.event_id, command.ids.job_id
    failed = command.outcome is StageOutcome.FAILED
    if reservation is None and not failed:
        raise CatalogNotParsedError(job_id)  # the catalog may still be on its way
    if reservation is not None:
        _check_group_id(job_id, reservation.image_group_id, command.image_group_id)
    if failed or reservation is None:
        # A failed build needs no catalog: the stage is recorded failed and no group exists.
        _refuse_if_built(uow, command)
        return None
    images, detail = reservation.images(deps.new_id), command.result_detail
    group = ImageGroup.create(
        reservation.image_group_id,
        job_id,
        images,
        event_id=event_id,
        at=now,
        cause=cause,
        detail=detail,
    )
    if deps.auto_advance:
        _start(group, StageName.DEPLOY, command, cause, deps, now)
    insert = uow.groups.create if late_insert else uow.groups.save  # create: with the COMMIT
    try:
        insert(group)
    except DuplicateImageGroupError:
        _refuse_if_built(uow, command)
        raise
    uow.jobs.upsert(JobRecord(job_id, PipelinePhase.DEPLOY), now)
    return group


def _refuse_if_built(uow: UnitOfWork, command: RecordStageResult) -> None:
    existing = uow.groups.find_by_job_id(command.ids.job_id)
    if existing is not None:
        raise StaleResultError(
            existing.id.value, existing.status, command.stage, "group already built"
        )


def _apply_stage_result(
    uow: UnitOfWork,
    command: RecordStageResult,
    cause: TransitionCause,
    deps: Deps,
    now: datetime,
    *,
    group: ImageGroup | None,
) -> ImageGroup:
    event_id, job_id = command.ids.event_id, command.ids.job_id
    if group is None:
        raise GroupNotCreatedError(job_id=job_id)
    _check_group_id(job_id, group.id, command.image_group_id)
    if command.attempt is None and command.request_event_id is not None:
        _refuse_an_old_request(uow, group, command)
    group.finish(
        command.stage,
        command.outcome,
        attempt=command.attempt,
        event_id=event_id,
        at=now,
        cause=cause,
        detail=command.result_detail,
    )
    follow = next_stage(group.status)
    if command.outcome is StageOutcome.SUCCEEDED and deps.auto_advance and follow is not None:
        # The next stage starts because of this result: the same cause, on the same attempt.
        _start(group, follow, command, cause.on_attempt(group.attempt), deps, now)
    uow.groups.update_status(group)
    return group


def _start(
    group: ImageGroup,
    stage: StageName,
    command: RecordStageResult,
    cause: TransitionCause,
    deps: Deps,
    now: datetime,
) -> None:
    """Start the stage the result leads to; its request carries the result's correlation."""
    group.start(
        stage,
        event_id=command.ids.event_id,
        at=now,
        timeout=deps.timeout(stage),
        cause=cause,
        correlation_id=command.ids.correlation_id,
    )


def _refuse_an_old_request(uow: UnitOfWork, group: ImageGroup, command: RecordStageResult) -> None:
    """Without an attempt, the request it answers tells an old result from the current one."""
    for record in uow.stages.find(group.job_id):
        if (
            record.stage is command.stage
            and record.state is StageState.REQUESTED
            and record.event_id != command.request_event_id
        ):
            raise StaleResultError(
                group.id.value,
                group.status,
                command.stage,
                f"it answers request {command.request_event_id}; "
                f"the current request is {record.event_id}",
            )


def _check_group_id(job_id: str, actual: ImageGroupId, given: ImageGroupId | None) -> None:
    if given is not None and given != actual:
        raise ImageGroupMismatchError(job_id, actual.value, given.value)


def _stage_result(command: RecordStageResult, now: datetime) -> StageRecord:
    return StageRecord(
        job_id=command.ids.job_id,
        stage=command.stage,
        state=StageState(command.outcome.value),
        attempt=command.attempt or 1,
        event_id=command.ids.event_id,
        updated_at=now,
        result_detail=command.result_detail,
        error_code=command.error_code,
        error_summary=command.error_summary,
    )


def request_stage(group_id: str, stage: StageName, *, deps: Deps) -> Result:
    """Ask for a stage now (a redeploy from FAILED starts a new attempt)."""
    timeout, cause = deps.timeout(stage), TransitionCause.operator(f"request {stage}", stage)
    return _command(
        group_id,
        deps,
        lambda g, cmd, at: g.start(stage, event_id=cmd, at=at, timeout=timeout, cause=cause),
    )


def cleanup(group_id: str, *, deps: Deps) -> Result:
    """Mark the group CLEANED."""
    cause = TransitionCause.operator("cleanup")
    return _command(group_id, deps, lambda g, cmd, at: g.clean(event_id=cmd, at=at, cause=cause))


def _command(
    group_id: str, deps: Deps, change: Callable[[ImageGroup, str, datetime], None]
) -> Result:
    command_id, now = deps.new_id(), deps.clock()
    with deps.new_uow() as uow:
        group = uow.groups.find_by_id_for_update(ImageGroupId(group_id))
        if group is None:
            raise ImageGroupNotFoundError(image_group_id=group_id)
        change(group, command_id, now)
        uow.groups.update_status(group)
        uow.commit()
    outcome = Outcome(EventOutcome.APPLIED, command_id, group.id.value, group.status)
    return Result(outcome, list(uow.follow_ons))


__all__ = [
    "Deps",
    "EventOutcome",
    "Expired",
    "Outcome",
    "Result",
    "cleanup",
    "expire_overdue",
    "handle_catalog_parsed",
    "handle_stage_finished",
    "request_stage",
]
