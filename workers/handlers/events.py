"""The incoming events: a catalog parsed, and a stage finished; each one transaction.

Every handler claims the event in the inbox first (a repeat is a duplicate), then takes its
row lock and asks the aggregate for the transition; the commit stores what the aggregate
recorded (history, stages, the outbox).
Lock order everywhere: the catalog reservation row, then the group row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from functools import partial

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
    InboxRecord,
    JobRecord,
    PipelinePhase,
    RecordStageResult,
    ReserveCatalog,
    StageName,
    StageOutcome,
    StageRecord,
    StageState,
    StaleResultError,
    TransitionCause,
    UnitOfWork,
    next_stage,
)
from workers.handlers.base import Deps, EventOutcome, Outcome, Result, stage_ends
from workers.messages import CATALOG_PARSED, STAGE_FINISHED

APPLIED, DUPLICATE, STALE = EventOutcome.APPLIED, EventOutcome.DUPLICATE, EventOutcome.STALE


def handle_catalog_parsed(command: ReserveCatalog, *, deps: Deps) -> Result:
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
    event_id, now = command.ids.event_id, deps.clock()
    given = None if command.image_group_id is None else command.image_group_id.value
    with deps.new_uow() as uow:
        claimed = _claim_later(uow, command.ids, STAGE_FINISHED.task, now)
        apply = _lock_for(uow, command)  # the lock travels with the claim: one round trip
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
    return uow.inbox.claim_later(
        InboxRecord(
            ids.event_id, task_name, APPLIED, now, ids.job_id, ids.causation_id, ids.delivery
        )
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


def _lock_for(uow: UnitOfWork, command: RecordStageResult) -> Apply:
    """Take the row lock the result is applied under, after the claim (the lock order); a
    duplicate holds it only until its commit. The reservation lock serialises the creation
    of the job's group (no group row to lock yet)."""
    job_id = command.ids.job_id
    if command.stage.is_build():
        reservation = uow.catalogs.find_by_job_id_for_update(job_id)
        return partial(_apply_build_result, reservation=reservation)
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
    try:
        uow.groups.save(group)  # insert first: the usual case costs no look-up
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
