"""What the aggregate records as it moves: domain events, in order, for the unit of work."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain import (
    STAGE_TIMEOUT,
    Image,
    ImageGroup,
    ImageGroupId,
    ImageGroupStatus,
    InvalidStateTransitionError,
    RoleName,
    StageEnded,
    StageName,
    StageOutcome,
    StageReported,
    StageRequested,
    StatusChanged,
    Transition,
    TransitionCause,
)

S = ImageGroupStatus
DEPLOY, PXE_BOOT = StageName.DEPLOY, StageName.PXE_BOOT
OK, KO = StageOutcome.SUCCEEDED, StageOutcome.FAILED
GROUP = ImageGroupId("group-1")
JOB = "0b6a6f0e-1b8e-4a53-9f57-6a8c4c1f0c11"
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
CORRELATION = "5c3e7a10-9b2d-4f61-8e0a-1d2c3b4a5f60"


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def images() -> list[Image]:
    return [Image("image-1", RoleName("compute"), "compute.img")]


def deploying() -> ImageGroup:
    group = ImageGroup.create(GROUP, JOB, images(), event_id="ev-0", at=at(0))
    group.start(DEPLOY, event_id="ev-1", at=at(1), timeout=timedelta(minutes=30))
    group.events.clear()
    return group


def test_a_group_built_by_a_stage_result_records_its_creation_and_that_result() -> None:
    built = TransitionCause.event("stage.finished", StageName.BUILD_IMAGE, OK)

    group = ImageGroup.create(
        GROUP, JOB, images(), event_id="ev-0", at=at(0), cause=built, detail={"log": "ok"}
    )

    assert group.events == [
        StatusChanged(Transition(GROUP, None, S.BUILT, "ev-0", at(0), built.on_attempt(1))),
        StageReported(StageName.BUILD_IMAGE, OK, 1, "ev-0", at(0), detail={"log": "ok"}),
    ]


def test_a_group_created_without_a_stage_result_records_only_its_creation() -> None:
    group = ImageGroup.create(GROUP, JOB, images(), event_id="ev-0", at=at(0))

    assert [type(event) for event in group.events] == [StatusChanged]


def test_a_start_records_the_move_then_the_request_with_its_cause_time_and_correlation() -> None:
    group = ImageGroup.create(GROUP, JOB, images(), event_id="ev-0", at=at(0))
    group.events.clear()

    group.start(DEPLOY, event_id="ev-1", at=at(1), correlation_id=CORRELATION)

    assert [type(event) for event in group.events] == [StatusChanged, StageRequested]
    assert group.recorded(StageRequested) == [StageRequested(DEPLOY, 1, "ev-1", at(1), CORRELATION)]


def test_a_result_that_starts_the_next_stage_records_each_fact_in_the_order_it_happened() -> None:
    group = deploying()
    cause = TransitionCause.event("stage.finished", DEPLOY, OK, attempt=1)

    group.finish(DEPLOY, OK, attempt=1, event_id="ev-2", at=at(2), cause=cause, detail={"n": 1})
    group.start(PXE_BOOT, event_id="ev-2", at=at(2), cause=cause)

    assert [type(event) for event in group.events] == [
        StatusChanged,
        StageEnded,
        StageReported,
        StatusChanged,
        StageRequested,
    ]
    assert group.recorded(StageEnded) == [StageEnded(DEPLOY, 1, OK, False, at(1), at(2))]
    assert group.recorded(StageReported) == [
        StageReported(DEPLOY, OK, 1, "ev-2", at(2), detail={"n": 1})
    ]


def test_a_failed_result_reports_the_error_its_cause_names() -> None:
    group = deploying()
    cause = TransitionCause.event(
        "stage.finished", DEPLOY, KO, error_code="E_DISK", error_summary="disk full"
    )

    group.finish(DEPLOY, KO, attempt=None, event_id="ev-2", at=at(2), cause=cause)

    assert group.recorded(StageReported) == [
        StageReported(DEPLOY, KO, 1, "ev-2", at(2), "E_DISK", "disk full")
    ]
    assert group.recorded(StageRequested) == []


def test_an_expiry_reports_the_stage_failed_with_stage_timeout_and_ends_it_timed_out() -> None:
    group = deploying()

    group.expire(DEPLOY, 1, event_id="cmd-1", at=at(40))

    [reported] = group.recorded(StageReported)
    assert (reported.outcome, reported.attempt, reported.event_id) == (KO, 1, "cmd-1")
    assert reported.error_code == STAGE_TIMEOUT
    assert reported.error_summary is not None and "deadline" in reported.error_summary
    assert group.recorded(StageEnded) == [StageEnded(DEPLOY, 1, KO, True, at(1), at(40))]


def test_a_refused_move_records_nothing() -> None:
    group = deploying()

    with pytest.raises(InvalidStateTransitionError):
        group.clean(event_id="ev-2", at=at(2))

    assert group.events == []
