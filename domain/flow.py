"""The one transition table: where each stage may start, the status it runs in, where its
outcomes lead, and which statuses may be cleaned; every legal move is derived from it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from domain.values import ImageGroupStatus, StageName, StageOutcome

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
