"""The unit of work stores what its groups recorded at commit, alike on every backend."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from domain import (
    Image,
    ImageGroup,
    ImageGroupId,
    ImageGroupStatus,
    RoleName,
    StageName,
    StageOutcome,
    StageState,
    TransitionCause,
)
from persistence.memory import MemoryState, MemoryUnitOfWork
from persistence.uow import StoreUnitOfWork
from tests.contract.conftest import NewUow

S = ImageGroupStatus
T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
JOB = "4d3c2b1a-0000-4000-8000-00000000000a"
GROUP = ImageGroupId("recorded-1")
CORRELATION = "9e8d7c6b-0000-4000-8000-00000000000b"


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def built() -> ImageGroup:
    images = [Image(str(uuid.uuid4()), RoleName("compute"), "compute.img")]
    return ImageGroup.create(GROUP, JOB, images, event_id="ev-built", at=at(0))


def saved(new_uow: NewUow) -> None:
    with new_uow() as uow:
        uow.groups.save(built())
        uow.commit()


def locked(uow: StoreUnitOfWork) -> ImageGroup:
    group = uow.groups.find_by_job_id_for_update(JOB)
    assert group is not None
    return group


def test_a_commit_stores_the_history_of_a_new_group_it_was_given(new_uow: NewUow) -> None:
    saved(new_uow)

    with new_uow() as uow:
        history = uow.history.list_for_group(GROUP)
    assert [(t.from_status, t.to_status, t.event_id) for t in history] == [
        (None, S.BUILT, "ev-built")
    ]


def test_a_start_becomes_its_history_row_its_follow_on_and_its_requested_stage_row(
    new_uow: NewUow,
) -> None:
    saved(new_uow)
    with new_uow() as uow:
        group = locked(uow)
        group.start(StageName.DEPLOY, event_id="ev-go", at=at(1), correlation_id=CORRELATION)
        uow.groups.update_status(group)
        uow.commit()
        [message] = uow.follow_ons

    with new_uow() as uow:
        history = uow.history.list_for_group(GROUP)
        [stored] = uow.trace.follow_ons(GROUP, [at(1)])
        [row] = uow.stages.find(JOB)
    assert [t.to_status for t in history] == [S.BUILT, S.DEPLOYING]
    assert stored == message
    assert (message.task_name, message.queue) == ("pipeline.deploy", "pipeline.deploy")
    assert message.body["event_type"] == "deploy.requested"
    assert message.body["causation_id"] == "ev-go"
    assert message.body["correlation_id"] == CORRELATION
    assert message.body["payload"]["attempt"] == 1
    assert message.body["payload"]["images"] == [{"role": "compute", "image_name": "compute.img"}]
    assert (row.stage, row.state, row.attempt) == (StageName.DEPLOY, StageState.REQUESTED, 1)
    assert row.event_id == message.event_id  # the request a result must answer


def test_a_finished_stage_becomes_its_result_row_with_the_error_and_detail_it_reported(
    new_uow: NewUow,
) -> None:
    saved(new_uow)
    failed = TransitionCause.event(
        "stage.finished",
        StageName.DEPLOY,
        StageOutcome.FAILED,
        error_code="E_DISK",
        error_summary="disk full",
    )
    with new_uow() as uow:
        group = locked(uow)
        group.start(StageName.DEPLOY, event_id="ev-go", at=at(1))
        group.finish(
            StageName.DEPLOY,
            StageOutcome.FAILED,
            attempt=1,
            event_id="ev-failed",
            at=at(2),
            cause=failed,
            detail={"node": "n3"},
        )
        uow.groups.update_status(group)
        uow.commit()

    with new_uow() as uow:
        [row] = uow.stages.find(JOB)
    assert (row.state, row.attempt, row.event_id) == (StageState.FAILED, 1, "ev-failed")
    assert (row.error_code, row.error_summary) == ("E_DISK", "disk full")
    assert row.result_detail == {"node": "n3"}


def test_what_was_stored_is_collected_so_a_second_commit_stores_it_no_more(
    new_uow: NewUow,
) -> None:
    saved(new_uow)
    with new_uow() as uow:
        group = locked(uow)
        group.start(StageName.DEPLOY, event_id="ev-go", at=at(1))
        uow.groups.update_status(group)
        uow.commit()
        assert group.events == []
        uow.groups.update_status(group)
        uow.commit()
        assert len(uow.follow_ons) == 1

    with new_uow() as uow:
        assert len(uow.history.list_for_group(GROUP)) == 2
        assert uow.outbox.pending()[0] == 1


def test_a_rollback_stores_nothing_the_groups_recorded(new_uow: NewUow) -> None:
    saved(new_uow)
    with new_uow() as uow:
        group = locked(uow)
        group.start(StageName.DEPLOY, event_id="ev-go", at=at(1))
        uow.groups.update_status(group)
        uow.rollback()
        uow.commit()
        assert uow.follow_ons == []

    with new_uow() as uow:
        assert len(uow.history.list_for_group(GROUP)) == 1
        assert uow.outbox.pending()[0] == 0
        assert uow.stages.find(JOB) == []


def test_a_unit_of_work_given_no_follow_on_builder_refuses_to_commit_a_stage_request() -> None:
    state = MemoryState()
    with MemoryUnitOfWork(state) as uow:
        uow.groups.save(built())
        uow.commit()
    with MemoryUnitOfWork(state) as uow:
        group = locked(uow)
        group.start(StageName.DEPLOY, event_id="ev-go", at=at(1))
        uow.groups.update_status(group)
        with pytest.raises(RuntimeError, match=r"recorded-1 requested deploy.*no follow-on"):
            uow.commit()
    assert state.groups[GROUP.value].status is S.BUILT  # nothing of it was stored
    assert state.outbox == {}
