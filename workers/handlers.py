"""Handlers: plain functions, one unit of work (one transaction) per event or command."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from domain import (
    CatalogConflictError,
    CatalogNotParsedError,
    CatalogReservation,
    DuplicateImageGroupError,
    GroupNotCreatedError,
    ImageGroup,
    ImageGroupId,
    ImageGroupMismatchError,
    ImageGroupNotFoundError,
    JobRecord,
    OutboxMessage,
    Outcome,
    PipelinePhase,
    RoleName,
    StageName,
    StageOutcome,
    StageRecord,
    StageState,
    StaleResultError,
    UnitOfWork,
    next_stage,
)
from workers.follow_on import Cause, request_message
from workers.schemas import CatalogParsedEvent, StageFinishedEvent

log = logging.getLogger(__name__)

CATALOG_PARSED = "imagegroups.catalog_parsed"
STAGE_FINISHED = "imagegroups.stage_finished"


@dataclass(frozen=True)
class Deps:
    """What a handler needs; built once per worker process by the bootstrap."""

    new_uow: Callable[[], UnitOfWork]
    clock: Callable[[], datetime]
    new_id: Callable[[], str]
    auto_advance: bool = True


@dataclass
class Result:
    outcome: Outcome
    messages: list[OutboxMessage] = field(default_factory=list)


def handle_catalog_parsed(event: CatalogParsedEvent, *, deps: Deps) -> Result:
    event_id, job_id = event.ids()
    p = event.payload
    now = deps.clock()
    reservation = CatalogReservation(
        image_group_id=ImageGroupId(p.image_group_id),
        job_id=job_id,
        roles=tuple(RoleName(r) for r in p.roles),
        role_images=p.role_images or {},
        catalog_name=p.catalog_name,
        catalog_version=p.catalog_version,
        created_at=now,
    )
    with deps.new_uow() as uow:
        if not uow.inbox.claim(event_id, CATALOG_PARSED, "applied", now):
            return Result(Outcome("duplicate", event_id, p.image_group_id))
        if uow.catalogs.reserve(reservation):
            uow.jobs.upsert(JobRecord(job_id, PipelinePhase.BUILD), now)
            outcome = Outcome("applied", event_id, p.image_group_id)
        else:
            _refuse_a_different_catalog(uow, reservation)
            uow.inbox.set_outcome(event_id, "duplicate")
            outcome = Outcome("duplicate", event_id, p.image_group_id, detail="already reserved")
        uow.commit()
    return Result(outcome)


def _refuse_a_different_catalog(uow: UnitOfWork, reservation: CatalogReservation) -> None:
    """The same catalog again is a no-op; another one for the same id must not pass silently."""
    held = uow.catalogs.find_by_job_id(reservation.job_id)
    if held is not None and not held.same_catalog(reservation):
        raise CatalogConflictError(reservation.image_group_id.value, reservation.job_id)


def handle_stage_finished(event: StageFinishedEvent, *, deps: Deps) -> Result:
    event_id, _job_id = event.ids()
    stage = StageName.parse(event.payload.stage)
    now = deps.clock()
    with deps.new_uow() as uow:
        if not uow.inbox.claim(event_id, STAGE_FINISHED, "applied", now):
            return Result(Outcome("duplicate", event_id, event.payload.image_group_id))
        try:
            if stage.is_build():
                group = _apply_build_result(uow, event, stage, deps, now)
            else:
                group = _apply_stage_result(uow, event, stage, deps, now)
        except StaleResultError as stale:
            uow.inbox.set_outcome(event_id, "stale")
            uow.commit()
            return Result(Outcome("stale", event_id, stale.image_group_id, detail=str(stale)))
        result = _stage_result(event, stage, group, now)
        cause = Cause(event_id, _opt(event.correlation_id))
        messages = _persist(uow, group, cause, deps, now, stages=[result])
        uow.commit()
    group_id = None if group is None else group.id.value
    status = None if group is None else group.status
    return Result(Outcome("applied", event_id, group_id, status), messages)


def _apply_build_result(
    uow: UnitOfWork, event: StageFinishedEvent, stage: StageName, deps: Deps, now: datetime
) -> ImageGroup | None:
    event_id, job_id = event.ids()
    # Lock order everywhere: reservation row, then group row. The reservation lock
    # serialises the creation of the job's group, which has no row to lock yet.
    reservation = uow.catalogs.find_by_job_id_for_update(job_id)
    failed = event.payload.outcome == StageOutcome.FAILED.value
    if reservation is None and not failed:
        raise CatalogNotParsedError(job_id)  # the catalog may still be on its way
    if reservation is not None:
        _check_group_id(job_id, reservation.image_group_id.value, event.payload.image_group_id)
    if failed or reservation is None:
        # A failed build needs no catalog: the stage is recorded failed and no group exists.
        _refuse_if_built(uow, job_id, stage)
        return None
    group = ImageGroup.create(
        reservation.image_group_id,
        job_id,
        reservation.images(deps.new_id),
        event_id=event_id,
        at=now,
    )
    if deps.auto_advance:
        group.start_deploy(event_id=event_id, at=now)
    try:
        # Insert first: the usual case costs no look-up; a conflict means already built.
        uow.groups.save(group)
    except DuplicateImageGroupError:
        _refuse_if_built(uow, job_id, stage)
        raise
    uow.jobs.upsert(JobRecord(job_id, PipelinePhase.DEPLOY), now)
    return group


def _refuse_if_built(uow: UnitOfWork, job_id: str, stage: StageName) -> None:
    existing = uow.groups.find_by_job_id(job_id)
    if existing is not None:
        raise StaleResultError(existing.id.value, existing.status, stage, "group already built")


def _apply_stage_result(
    uow: UnitOfWork, event: StageFinishedEvent, stage: StageName, deps: Deps, now: datetime
) -> ImageGroup:
    event_id, job_id = event.ids()
    group = uow.groups.find_by_job_id_for_update(job_id)
    if group is None:
        raise GroupNotCreatedError(job_id=job_id)
    _check_group_id(job_id, group.id.value, event.payload.image_group_id)
    if event.payload.attempt is None and event.payload.request_event_id is not None:
        _refuse_an_old_request(uow, group, stage, str(event.payload.request_event_id))
    outcome = StageOutcome(event.payload.outcome)
    group.finish(stage, outcome, attempt=event.payload.attempt, event_id=event_id, at=now)
    follow = next_stage(group.status)
    if outcome is StageOutcome.SUCCEEDED and deps.auto_advance and follow is not None:
        group.start(follow, event_id=event_id, at=now)
    uow.groups.update_status(group)
    return group


def _refuse_an_old_request(
    uow: UnitOfWork, group: ImageGroup, stage: StageName, request_event_id: str
) -> None:
    """Without an attempt, the request it answers tells an old result from the current one."""
    for record in uow.stages.find(group.job_id):
        if (
            record.stage is stage
            and record.state is StageState.REQUESTED
            and record.event_id != request_event_id
        ):
            raise StaleResultError(
                group.id.value,
                group.status,
                stage,
                f"it answers request {request_event_id}; the current request is {record.event_id}",
            )


def _check_group_id(job_id: str, actual: str, given: str | None) -> None:
    if given is not None and given != actual:
        raise ImageGroupMismatchError(job_id, actual, given)


def _stage_result(
    event: StageFinishedEvent, stage: StageName, group: ImageGroup | None, now: datetime
) -> StageRecord:
    p = event.payload
    event_id, job_id = event.ids()
    return StageRecord(
        job_id=job_id,
        stage=stage,
        state=StageState(p.outcome),
        attempt=p.attempt or (1 if group is None else group.attempt),
        event_id=event_id,
        updated_at=now,
        result_detail=p.result_detail,
        error_code=p.error_code,
        error_summary=p.error_summary,
    )


def _persist(
    uow: UnitOfWork,
    group: ImageGroup | None,
    cause: Cause,
    deps: Deps,
    now: datetime,
    stages: list[StageRecord] | None = None,
) -> list[OutboxMessage]:
    """History, outbox and stage rows, in the caller's transaction."""
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


def request_stage(group_id: str, stage: StageName, *, deps: Deps) -> Result:
    """Operator command: ask for a stage now (redeploy from FAILED starts a new attempt)."""
    return _command(group_id, deps, lambda g, cmd, at: g.start(stage, event_id=cmd, at=at))


def cleanup(group_id: str, *, deps: Deps) -> Result:
    """Operator command: mark the group CLEANED."""
    return _command(group_id, deps, lambda g, cmd, at: g.clean(event_id=cmd, at=at))


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
        messages = _persist(uow, group, Cause(command_id), deps, now)
        uow.commit()
    return Result(Outcome("applied", command_id, group.id.value, group.status), messages)


def _opt(value: object | None) -> str | None:
    return None if value is None else str(value)
