"""Why a group failed: every backend finds each job's latest failed stage the same way."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from domain import StageName, StageRecord, StageState, UnitOfWork
from workers.edge.accept import MAX_ATTEMPT

NewUow = Callable[[], UnitOfWork]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def record(
    job: str, stage: StageName, state: StageState, attempt: int, minute: int, code: str = ""
) -> StageRecord:
    failed = state is StageState.FAILED
    return StageRecord(
        job_id=job,
        stage=stage,
        state=state,
        attempt=attempt,
        event_id=f"ev-{job}-{stage.value}-{attempt}",
        updated_at=T0 + timedelta(minutes=minute),
        error_code=(code or None) if failed else None,
        error_summary=f"{stage.value} broke on attempt {attempt}" if failed else None,
    )


def stored(new_uow: NewUow, *records: StageRecord) -> None:
    with new_uow() as uow:
        uow.stages.upsert_many(records)
        uow.commit()


def test_a_job_with_one_failed_stage_gets_that_stage_with_its_code_and_summary(
    new_uow: NewUow,
) -> None:
    failed = record("job-1", StageName.DEPLOY, StageState.FAILED, 1, 2, "E_DEPLOY")
    stored(
        new_uow,
        record("job-1", StageName.BUILD_IMAGE, StageState.SUCCEEDED, 1, 0),
        failed,
    )

    with new_uow() as uow:
        assert uow.stages.latest_failures(["job-1"]) == {"job-1": failed}


def test_the_failure_of_the_newest_attempt_wins_over_an_older_later_written_one(
    new_uow: NewUow,
) -> None:
    # Attempt 1 failed at validate; the redeploy (attempt 2) failed at deploy. The validate
    # row of attempt 1 stays, and a clock step backwards must not bring it back.
    old = record("job-1", StageName.VALIDATE, StageState.FAILED, 1, 9, "E_OLD")
    new = record("job-1", StageName.DEPLOY, StageState.FAILED, 2, 5, "E_NEW")
    stored(new_uow, old, new)

    with new_uow() as uow:
        assert uow.stages.latest_failures(["job-1"]) == {"job-1": new}


def test_on_the_same_attempt_the_later_failure_wins(new_uow: NewUow) -> None:
    earlier = record("job-1", StageName.DEPLOY, StageState.FAILED, 1, 1, "E_1")
    later = record("job-1", StageName.PXE_BOOT, StageState.FAILED, 1, 3, "E_2")
    stored(new_uow, later, earlier)

    with new_uow() as uow:
        assert uow.stages.latest_failures(["job-1"]) == {"job-1": later}


def test_jobs_without_a_failed_stage_and_jobs_not_asked_for_are_left_out(
    new_uow: NewUow,
) -> None:
    failed_2 = record("job-2", StageName.PXE_BOOT, StageState.FAILED, 1, 4)
    stored(
        new_uow,
        record("job-1", StageName.DEPLOY, StageState.SUCCEEDED, 1, 1),
        record("job-1", StageName.PXE_BOOT, StageState.REQUESTED, 1, 2),
        failed_2,
        record("job-3", StageName.DEPLOY, StageState.FAILED, 1, 5),
    )

    with new_uow() as uow:
        found = uow.stages.latest_failures(["job-1", "job-2", "job-9"])
        nothing = uow.stages.latest_failures([])

    assert found == {"job-2": failed_2}
    assert failed_2.error_code is None  # a publisher may send no code; it comes back None
    assert nothing == {}


def test_a_redeployed_stage_that_is_requested_again_is_no_longer_a_failure(
    new_uow: NewUow,
) -> None:
    stored(new_uow, record("job-1", StageName.DEPLOY, StageState.FAILED, 1, 1, "E_1"))
    stored(new_uow, record("job-1", StageName.DEPLOY, StageState.REQUESTED, 2, 2))

    with new_uow() as uow:
        assert uow.stages.latest_failures(["job-1"]) == {}


def test_the_largest_attempt_the_schema_allows_is_stored_and_read_back(new_uow: NewUow) -> None:
    failed = record("job-1", StageName.BUILD_IMAGE, StageState.FAILED, MAX_ATTEMPT, 1, "E")
    stored(new_uow, failed)

    with new_uow() as uow:
        assert uow.stages.latest_failures(["job-1"]) == {"job-1": failed}
