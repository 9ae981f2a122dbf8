"""Stage deadlines: a group whose requested stage went unanswered past its deadline FAILS.

Run by the worker's deadline sweep (workers/runtime/housekeeping.py), never by an event. One unit
of work locks the overdue groups no other sweeper holds (SKIP LOCKED), asks each aggregate
to expire its stage (which re-checks status, attempt and deadline under the lock); its
commit stores the FAILED transition, its history row and the stage row in one transaction.
There is no follow-on: a FAILED group waits for an operator's redeploy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from domain import NotOverdueError, StageEnded
from workers.handlers.base import Deps, stage_ends


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
