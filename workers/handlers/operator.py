"""Operator commands: request the next stage of a group, or mark it cleaned."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from domain import ImageGroup, ImageGroupId, ImageGroupNotFoundError, StageName, TransitionCause
from workers.handlers.base import Deps, EventOutcome, Outcome, Result


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
