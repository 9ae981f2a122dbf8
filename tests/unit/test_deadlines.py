"""Stage deadlines: the aggregate's `expire` and the sweep's handler, on in-memory fakes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import count

import pytest

from domain import (
    ALLOWED_TRANSITIONS,
    STAGE_FLOW,
    STAGE_TIMEOUT,
    Image,
    ImageGroup,
    ImageGroupId,
    ImageGroupStatus,
    NotOverdueError,
    RoleName,
    StageEnded,
    StageFlow,
    StageName,
    StageOutcome,
    StageState,
    StaleResultError,
)
from persistence.memory import MemoryState, MemoryUnitOfWork
from tests.recorded import moves as _moves
from tests.recorded import requests as _requests
from workers import outbox
from workers.edge.accept import StageFinishedEvent
from workers.handlers import Deps, expire_overdue, handle_stage_finished, request_stage
from workers.outbox import FollowOns

S = ImageGroupStatus
DEPLOY, PXE_BOOT, VALIDATE = StageName.DEPLOY, StageName.PXE_BOOT, StageName.VALIDATE
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
JOB = "0b6a6f0e-1b8e-4a53-9f57-6a8c4c1f0c11"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def built() -> ImageGroup:
    images = [Image("img-1", RoleName("compute"), "compute.img")]
    return ImageGroup.create(ImageGroupId("group-1"), JOB, images, event_id="ev-build", at=T0)


def deploying(timeout: timedelta | None = HOUR) -> ImageGroup:
    group = built()
    group.start(DEPLOY, event_id="ev-start", at=at(10), timeout=timeout)
    return group


# The aggregate ----------------------------------------------------------------------------


def test_starting_a_stage_with_a_timeout_sets_its_deadline_from_the_time_it_starts() -> None:
    group = deploying(timedelta(minutes=30))

    assert group.deadline_at == at(10) + timedelta(minutes=30)


def test_starting_a_stage_without_a_timeout_leaves_no_deadline() -> None:
    assert deploying(timeout=None).deadline_at is None


def test_a_stage_result_clears_the_deadline_and_the_next_stage_sets_its_own() -> None:
    group = deploying()
    group.finish(DEPLOY, StageOutcome.SUCCEEDED, attempt=1, event_id="ev-ok", at=at(100))
    assert group.deadline_at is None

    group.start(PXE_BOOT, event_id="ev-ok", at=at(100), timeout=timedelta(minutes=30))
    assert group.deadline_at == at(100) + timedelta(minutes=30)


@pytest.mark.parametrize("flow", STAGE_FLOW.values(), ids=lambda f: f.stage.value)
def test_every_running_status_may_move_to_failed_as_an_expiry_needs(flow: StageFlow) -> None:
    assert S.FAILED in ALLOWED_TRANSITIONS[flow.running]


def test_expiring_past_the_deadline_fails_the_group_with_one_transition() -> None:
    group = deploying()
    group.events.clear()

    group.expire(DEPLOY, 1, event_id="cmd-expire", at=at(10) + HOUR)

    assert group.status is S.FAILED
    assert group.deadline_at is None
    assert [(t.from_status, t.to_status, t.event_id) for t in _moves(group)] == [
        (S.DEPLOYING, S.FAILED, "cmd-expire")
    ]
    assert _requests(group) == []  # no follow-on: a FAILED group waits for an operator


def test_an_expiry_records_the_stage_as_timed_out_from_its_request() -> None:
    group = deploying()

    group.expire(DEPLOY, 1, event_id="cmd-expire", at=at(4000))

    assert group.recorded(StageEnded) == [
        StageEnded(DEPLOY, 1, StageOutcome.FAILED, True, requested_at=at(10), at=at(4000))
    ]


def test_a_result_records_how_long_the_stage_took_from_its_request() -> None:
    group = deploying()

    group.finish(DEPLOY, StageOutcome.FAILED, attempt=1, event_id="ev-no", at=at(70))

    assert group.recorded(StageEnded) == [
        StageEnded(DEPLOY, 1, StageOutcome.FAILED, False, requested_at=at(10), at=at(70))
    ]


def test_expiring_before_the_deadline_is_refused_and_changes_nothing() -> None:
    group = deploying()

    with pytest.raises(NotOverdueError, match="deadline"):
        group.expire(DEPLOY, 1, event_id="cmd", at=at(10) + HOUR - timedelta(seconds=1))

    assert (group.status, group.deadline_at) == (S.DEPLOYING, at(10) + HOUR)


@pytest.mark.parametrize(("stage", "attempt"), [(PXE_BOOT, 1), (VALIDATE, 1), (DEPLOY, 2)], ids=str)
def test_expiring_a_stage_or_attempt_the_group_does_not_wait_for_is_refused(
    stage: StageName, attempt: int
) -> None:
    group = deploying()

    with pytest.raises(NotOverdueError):
        group.expire(stage, attempt, event_id="cmd", at=at(10) + 2 * HOUR)

    assert group.status is S.DEPLOYING


def test_a_stage_without_a_deadline_never_expires() -> None:
    group = deploying(timeout=None)

    with pytest.raises(NotOverdueError):
        group.expire(DEPLOY, 1, event_id="cmd", at=at(10) + 1000 * HOUR)


def test_a_late_result_for_the_expired_attempt_is_stale() -> None:
    group = deploying()
    group.expire(DEPLOY, 1, event_id="cmd", at=at(4000))

    with pytest.raises(StaleResultError):
        group.finish(DEPLOY, StageOutcome.SUCCEEDED, attempt=1, event_id="ev-late", at=at(4001))


def test_a_redeploy_after_an_expiry_is_attempt_two_with_a_new_deadline() -> None:
    group = deploying()
    group.expire(DEPLOY, 1, event_id="cmd", at=at(4000))

    group.start(DEPLOY, event_id="cmd-redeploy", at=at(5000), timeout=HOUR)

    assert (group.status, group.attempt, group.deadline_at) == (S.DEPLOYING, 2, at(5000) + HOUR)


def test_the_group_waits_for_the_stage_of_its_running_status_only() -> None:
    group = deploying()
    assert group.running_stage() is DEPLOY
    group.expire(DEPLOY, 1, event_id="cmd", at=at(4000))
    assert group.running_stage() is None


# The sweep's handler -----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state() -> MemoryState:
    return MemoryState()


@pytest.fixture
def deps(state: MemoryState, clock: Clock) -> Deps:
    ids: Iterator[int] = count(1)
    return Deps(
        new_uow=lambda: MemoryUnitOfWork(state, FollowOns()),
        clock=clock,
        new_id=lambda: f"00000000-0000-4000-8000-{next(ids):012d}",
        stage_timeouts={DEPLOY: HOUR, PXE_BOOT: HOUR / 2, VALIDATE: HOUR},
    )


@pytest.fixture
def waiting(state: MemoryState, deps: Deps) -> ImageGroup:
    """A BUILT group the operator asked to deploy at T0: due at T0 + 1 h."""
    with deps.new_uow() as uow:
        group = built()
        uow.groups.save(group)
        uow.commit()
    request_stage("group-1", DEPLOY, deps=deps)
    return state.groups["group-1"]


def test_a_requested_stage_gets_the_deadline_of_its_timeout(waiting: ImageGroup) -> None:
    assert (waiting.status, waiting.deadline_at) == (S.DEPLOYING, T0 + HOUR)


def test_the_sweep_leaves_a_group_whose_deadline_has_not_passed(
    waiting: ImageGroup, deps: Deps, clock: Clock, state: MemoryState
) -> None:
    clock.now = T0 + HOUR - timedelta(microseconds=1)

    assert expire_overdue(deps=deps) == []
    assert state.groups["group-1"].status is S.DEPLOYING


def test_the_sweep_fails_an_overdue_group_with_history_and_a_stage_timeout_row(
    waiting: ImageGroup, deps: Deps, clock: Clock, state: MemoryState
) -> None:
    outbox_before = dict(state.outbox)
    clock.now = T0 + HOUR

    [expired] = expire_overdue(deps=deps)

    group = state.groups["group-1"]
    assert (group.status, group.deadline_at) == (S.FAILED, None)
    last = state.history[-1]
    assert (last.from_status, last.to_status, last.event_id) == (
        S.DEPLOYING,
        S.FAILED,
        expired.event_id,
    )
    row = state.stages[(JOB, DEPLOY.value)]
    assert (row.state, row.attempt, row.error_code, row.event_id) == (
        StageState.FAILED,
        1,
        STAGE_TIMEOUT,
        expired.event_id,
    )
    assert (
        row.error_summary
        == f"no deploy result for attempt 1 by its deadline {T0 + HOUR:%Y-%m-%dT%H:%M:%S+00:00}"
    )
    assert state.outbox == outbox_before  # no follow-on
    assert expired.ended.timed_out and expired.deadline_at == T0 + HOUR


def test_a_second_sweep_expires_nothing_more(
    waiting: ImageGroup, deps: Deps, clock: Clock, state: MemoryState
) -> None:
    clock.now = T0 + 2 * HOUR
    assert len(expire_overdue(deps=deps)) == 1

    assert expire_overdue(deps=deps) == []
    assert [t.to_status for t in state.history].count(S.FAILED) == 1


def test_a_late_result_for_the_expired_attempt_is_recorded_stale(
    waiting: ImageGroup, deps: Deps, clock: Clock, state: MemoryState
) -> None:
    clock.now = T0 + 2 * HOUR
    expire_overdue(deps=deps)
    body = outbox.stage_finished(JOB, "deploy", "succeeded", attempt=1, at=clock.now)

    result = handle_stage_finished(StageFinishedEvent.model_validate(body).to_command(), deps=deps)

    assert result.outcome.outcome == "stale"
    assert state.groups["group-1"].status is S.FAILED


def test_a_redeploy_after_an_expiry_requests_attempt_two_due_one_timeout_later(
    waiting: ImageGroup, deps: Deps, clock: Clock, state: MemoryState
) -> None:
    clock.now = T0 + 2 * HOUR
    expire_overdue(deps=deps)
    clock.now = T0 + 3 * HOUR

    result = request_stage("group-1", DEPLOY, deps=deps)

    group = state.groups["group-1"]
    assert (group.status, group.attempt, group.deadline_at) == (S.DEPLOYING, 2, T0 + 4 * HOUR)
    assert [m.body["payload"]["attempt"] for m in result.messages] == [2]


def test_the_sweep_takes_the_earliest_deadlines_first_up_to_its_limit(
    deps: Deps, clock: Clock, state: MemoryState
) -> None:
    for n, minutes in enumerate([30, 10, 20]):
        with deps.new_uow() as uow:
            group = ImageGroup.create(
                ImageGroupId(f"group-{n}"),
                f"0b6a6f0e-1b8e-4a53-9f57-{n:012d}",
                [Image(f"img-{n}", RoleName("compute"), "compute.img")],
                event_id=f"ev-{n}",
                at=T0,
            )
            group.start(DEPLOY, event_id=f"ev-{n}", at=T0, timeout=timedelta(minutes=minutes))
            uow.groups.save(group)
            uow.commit()
    clock.now = T0 + HOUR

    first = expire_overdue(deps=deps, limit=2)
    rest = expire_overdue(deps=deps, limit=2)

    assert [e.image_group_id for e in first] == ["group-1", "group-2"]
    assert [e.image_group_id for e in rest] == ["group-0"]
