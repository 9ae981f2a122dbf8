"""What a transition leaves behind for the handler to write: history rows, stage requests,
and the stages that ended (their results, or their deadlines passing)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from domain.values import ImageGroupId, ImageGroupStatus, StageName, StageOutcome


@dataclass(frozen=True, slots=True)
class Transition:
    """One recorded status change of a group; `from_status` is None for its creation."""

    image_group_id: ImageGroupId
    from_status: ImageGroupStatus | None
    to_status: ImageGroupStatus
    event_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class StageRequest:
    """The group entered a stage's running status: that stage must be asked for."""

    stage: StageName
    attempt: int


#: The error code of a stage whose deadline passed with no result (docs/contract.md §4).
STAGE_TIMEOUT = "STAGE_TIMEOUT"


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
