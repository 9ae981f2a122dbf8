"""The ImageGroup state machine, checked against tables written out from docs/contract.md §3.

The expected tables below are data typed in by hand; they are never derived from domain code.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.errors import DomainError, InvalidStateTransitionError, StaleResultError
from domain.model import (
    ALLOWED_TRANSITIONS,
    Image,
    ImageGroup,
    ImageGroupId,
    ImageGroupStatus,
    RoleName,
    StageName,
    StageOutcome,
    Transition,
    next_stage,
)
from tests.recorded import moves as recorded_moves
from tests.recorded import requests as _requests

S = ImageGroupStatus
DEPLOY = StageName.DEPLOY
PXE_BOOT = StageName.PXE_BOOT
VALIDATE = StageName.VALIDATE
OK = StageOutcome.SUCCEEDED
KO = StageOutcome.FAILED

STALE = StaleResultError
INVALID = InvalidStateTransitionError

GROUP_ID = ImageGroupId("group-1")
JOB_ID = "0b6a6f0e-1b8e-4a53-9f57-6a8c4c1f0c11"
CREATED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LATER = CREATED + timedelta(minutes=5)

Expected = ImageGroupStatus | type[DomainError]

# ---------------------------------------------------------------------------------------
# Expected tables (docs/contract.md §3)
# ---------------------------------------------------------------------------------------

#: finish(stage, outcome) from each status -> (result on succeeded, result on failed).
#: A status is the new status; STALE = the group already left the stage's running status
#: (later on the happy path, or terminal); INVALID = the group has not reached the stage yet.
FINISH_TABLE: dict[StageName, dict[ImageGroupStatus, tuple[Expected, Expected]]] = {
    DEPLOY: {
        S.BUILT: (INVALID, INVALID),
        S.DEPLOYING: (S.DEPLOYED, S.FAILED),
        S.DEPLOYED: (STALE, STALE),
        S.RESTARTING: (STALE, STALE),
        S.RESTARTED: (STALE, STALE),
        S.VALIDATING: (STALE, STALE),
        S.PASSED: (STALE, STALE),
        S.FAILED: (STALE, STALE),
        S.CLEANED: (STALE, STALE),
    },
    PXE_BOOT: {
        S.BUILT: (INVALID, INVALID),
        S.DEPLOYING: (INVALID, INVALID),
        S.DEPLOYED: (INVALID, INVALID),
        S.RESTARTING: (S.RESTARTED, S.FAILED),
        S.RESTARTED: (STALE, STALE),
        S.VALIDATING: (STALE, STALE),
        S.PASSED: (STALE, STALE),
        S.FAILED: (STALE, STALE),
        S.CLEANED: (STALE, STALE),
    },
    VALIDATE: {
        S.BUILT: (INVALID, INVALID),
        S.DEPLOYING: (INVALID, INVALID),
        S.DEPLOYED: (INVALID, INVALID),
        S.RESTARTING: (INVALID, INVALID),
        S.RESTARTED: (INVALID, INVALID),
        S.VALIDATING: (S.PASSED, S.FAILED),
        S.PASSED: (STALE, STALE),
        S.FAILED: (STALE, STALE),
        S.CLEANED: (STALE, STALE),
    },
}

#: start(stage) from each status -> the running status it enters, or INVALID.
START_TABLE: dict[StageName, dict[ImageGroupStatus, Expected]] = {
    DEPLOY: {
        S.BUILT: S.DEPLOYING,
        S.DEPLOYING: INVALID,
        S.DEPLOYED: INVALID,
        S.RESTARTING: INVALID,
        S.RESTARTED: INVALID,
        S.VALIDATING: INVALID,
        S.PASSED: INVALID,
        S.FAILED: S.DEPLOYING,
        S.CLEANED: INVALID,
    },
    PXE_BOOT: {
        S.BUILT: INVALID,
        S.DEPLOYING: INVALID,
        S.DEPLOYED: S.RESTARTING,
        S.RESTARTING: INVALID,
        S.RESTARTED: INVALID,
        S.VALIDATING: INVALID,
        S.PASSED: INVALID,
        S.FAILED: INVALID,
        S.CLEANED: INVALID,
    },
    VALIDATE: {
        S.BUILT: INVALID,
        S.DEPLOYING: INVALID,
        S.DEPLOYED: INVALID,
        S.RESTARTING: INVALID,
        S.RESTARTED: S.VALIDATING,
        S.VALIDATING: INVALID,
        S.PASSED: INVALID,
        S.FAILED: INVALID,
        S.CLEANED: INVALID,
    },
}

#: clean() from each status: True = CLEANED, False = refused.
CLEAN_TABLE: dict[ImageGroupStatus, bool] = {
    S.BUILT: True,
    S.DEPLOYING: False,
    S.DEPLOYED: True,
    S.RESTARTING: False,
    S.RESTARTED: True,
    S.VALIDATING: False,
    S.PASSED: True,
    S.FAILED: True,
    S.CLEANED: False,
}

#: Every legal single move.
EXPECTED_ALLOWED: dict[ImageGroupStatus, frozenset[ImageGroupStatus]] = {
    S.BUILT: frozenset({S.DEPLOYING, S.CLEANED}),
    S.DEPLOYING: frozenset({S.DEPLOYED, S.FAILED}),
    S.DEPLOYED: frozenset({S.RESTARTING, S.CLEANED}),
    S.RESTARTING: frozenset({S.RESTARTED, S.FAILED}),
    S.RESTARTED: frozenset({S.VALIDATING, S.CLEANED}),
    S.VALIDATING: frozenset({S.PASSED, S.FAILED}),
    S.PASSED: frozenset({S.CLEANED}),
    S.FAILED: frozenset({S.DEPLOYING, S.CLEANED}),
    S.CLEANED: frozenset(),
}

#: The stage that follows each status after a success (FAILED waits for an operator).
EXPECTED_NEXT_STAGE: dict[ImageGroupStatus, StageName | None] = {
    S.BUILT: DEPLOY,
    S.DEPLOYING: None,
    S.DEPLOYED: PXE_BOOT,
    S.RESTARTING: None,
    S.RESTARTED: VALIDATE,
    S.VALIDATING: None,
    S.PASSED: None,
    S.FAILED: None,
    S.CLEANED: None,
}


def _finish_cases(want: Callable[[Expected], bool]) -> list[Any]:
    return [
        pytest.param(
            status,
            stage,
            outcome,
            expected,
            id=f"{status}-{stage}-{outcome}",
        )
        for stage, rows in FINISH_TABLE.items()
        for status, (on_success, on_failure) in rows.items()
        for outcome, expected in ((OK, on_success), (KO, on_failure))
        if want(expected)
    ]


def _moves(expected: Expected) -> bool:
    return isinstance(expected, ImageGroupStatus)


def _is_stale(expected: Expected) -> bool:
    return expected is STALE


def _is_invalid(expected: Expected) -> bool:
    return expected is INVALID


def _start_cases(moves: bool) -> list[Any]:
    return [
        pytest.param(status, stage, expected, id=f"{status}-{stage}")
        for stage, rows in START_TABLE.items()
        for status, expected in rows.items()
        if isinstance(expected, ImageGroupStatus) is moves
    ]


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def _group(status: ImageGroupStatus, attempt: int = 1) -> ImageGroup:
    return ImageGroup(
        id=GROUP_ID,
        job_id=JOB_ID,
        status=status,
        images=(Image("image-1", RoleName("compute"), "compute.img"),),
        created_at=CREATED,
        updated_at=CREATED,
        attempt=attempt,
    )


def _snapshot(group: ImageGroup) -> tuple[Any, ...]:
    return (
        group.status,
        group.attempt,
        group.updated_at,
        recorded_moves(group),
        _requests(group),
    )


# ---------------------------------------------------------------------------------------
# The tables are complete
# ---------------------------------------------------------------------------------------


def test_expected_tables_cover_every_status_and_every_non_build_stage() -> None:
    every_status = set(ImageGroupStatus)
    group_stages = {s for s in StageName if not s.is_build()}

    assert set(FINISH_TABLE) == group_stages
    assert set(START_TABLE) == group_stages
    for stage in group_stages:
        assert set(FINISH_TABLE[stage]) == every_status
        assert set(START_TABLE[stage]) == every_status
    assert set(CLEAN_TABLE) == every_status
    assert set(EXPECTED_ALLOWED) == every_status
    assert set(EXPECTED_NEXT_STAGE) == every_status
    kinds = (_moves, _is_stale, _is_invalid)
    n_finish = sum(len(_finish_cases(kind)) for kind in kinds)
    assert n_finish == len(every_status) * len(group_stages) * len(StageOutcome)


# ---------------------------------------------------------------------------------------
# finish(): stage results, exhaustively
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "stage", "outcome", "expected"), _finish_cases(_moves))
def test_stage_result_while_stage_runs_moves_group_to_outcome_status(
    status: ImageGroupStatus,
    stage: StageName,
    outcome: StageOutcome,
    expected: ImageGroupStatus,
) -> None:
    group = _group(status)

    group.finish(stage, outcome, attempt=None, event_id="evt-result", at=LATER)

    assert group.status is expected
    assert group.updated_at == LATER
    assert group.attempt == 1
    assert recorded_moves(group) == [Transition(GROUP_ID, status, expected, "evt-result", LATER)]
    assert _requests(group) == []


@pytest.mark.parametrize(("status", "stage", "outcome", "expected"), _finish_cases(_is_stale))
def test_stage_result_after_group_left_the_stage_is_stale_and_changes_nothing(
    status: ImageGroupStatus,
    stage: StageName,
    outcome: StageOutcome,
    expected: type[DomainError],
) -> None:
    group = _group(status)
    before = _snapshot(group)

    with pytest.raises(StaleResultError) as caught:
        group.finish(stage, outcome, attempt=None, event_id="evt-result", at=LATER)

    assert type(caught.value) is expected
    assert caught.value.image_group_id == str(GROUP_ID)
    assert caught.value.current == status
    assert caught.value.stage == stage
    assert _snapshot(group) == before


@pytest.mark.parametrize(("status", "stage", "outcome", "expected"), _finish_cases(_is_invalid))
def test_stage_result_before_group_reached_the_stage_is_an_invalid_transition(
    status: ImageGroupStatus,
    stage: StageName,
    outcome: StageOutcome,
    expected: type[DomainError],
) -> None:
    group = _group(status)
    before = _snapshot(group)

    with pytest.raises(InvalidStateTransitionError) as caught:
        group.finish(stage, outcome, attempt=None, event_id="evt-result", at=LATER)

    assert type(caught.value) is expected
    assert caught.value.current == status
    assert caught.value.allowed == tuple(sorted(EXPECTED_ALLOWED[status]))
    assert _snapshot(group) == before


def test_deploy_result_after_group_failed_is_stale() -> None:
    group = _group(S.FAILED)

    with pytest.raises(StaleResultError, match=r"already left DEPLOYING"):
        group.finish(DEPLOY, OK, attempt=None, event_id="evt-late", at=LATER)

    assert group.status is S.FAILED


# ---------------------------------------------------------------------------------------
# Attempts
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "stage"),
    [(S.DEPLOYING, DEPLOY), (S.RESTARTING, PXE_BOOT), (S.VALIDATING, VALIDATE)],
)
@pytest.mark.parametrize("outcome", [OK, KO])
def test_result_for_an_older_attempt_is_stale_and_changes_nothing(
    status: ImageGroupStatus, stage: StageName, outcome: StageOutcome
) -> None:
    group = _group(status, attempt=2)
    before = _snapshot(group)

    with pytest.raises(StaleResultError, match=r"attempt 1 is older than current attempt 2"):
        group.finish(stage, outcome, attempt=1, event_id="evt-old", at=LATER)

    assert _snapshot(group) == before
    assert group.status is status
    assert group.attempt == 2
    assert recorded_moves(group) == []


@pytest.mark.parametrize(
    ("status", "stage"),
    [(S.DEPLOYING, DEPLOY), (S.RESTARTING, PXE_BOOT), (S.VALIDATING, VALIDATE)],
)
def test_result_for_a_never_requested_newer_attempt_is_an_invalid_transition(
    status: ImageGroupStatus, stage: StageName
) -> None:
    group = _group(status, attempt=1)
    before = _snapshot(group)

    with pytest.raises(InvalidStateTransitionError, match=r"attempt 2 was never requested"):
        group.finish(stage, OK, attempt=2, event_id="evt-new", at=LATER)

    assert _snapshot(group) == before


def test_result_for_the_current_attempt_is_applied() -> None:
    group = _group(S.DEPLOYING, attempt=3)

    group.finish(DEPLOY, OK, attempt=3, event_id="evt-ok", at=LATER)

    assert group.status is S.DEPLOYED
    assert group.attempt == 3


def test_late_result_of_a_failed_attempt_after_redeploy_is_stale() -> None:
    group = _group(S.FAILED, attempt=1)
    group.start(DEPLOY, event_id="evt-redeploy", at=LATER)
    before = _snapshot(group)

    with pytest.raises(StaleResultError):
        group.finish(DEPLOY, OK, attempt=1, event_id="evt-late", at=LATER)

    assert _snapshot(group) == before
    assert group.status is S.DEPLOYING
    assert group.attempt == 2


def test_start_from_built_keeps_attempt_one() -> None:
    group = _group(S.BUILT)

    group.start(DEPLOY, event_id="evt-start", at=LATER)

    assert group.attempt == 1
    assert _requests(group) == [(DEPLOY, 1)]


def test_redeploy_from_failed_increments_attempt_and_requests_the_new_attempt() -> None:
    group = _group(S.BUILT)
    group.start(DEPLOY, event_id="evt-1", at=LATER)
    group.finish(DEPLOY, KO, attempt=1, event_id="evt-2", at=LATER)

    group.start(DEPLOY, event_id="evt-3", at=LATER)
    assert group.attempt == 2
    group.finish(DEPLOY, KO, attempt=2, event_id="evt-4", at=LATER)

    group.start(DEPLOY, event_id="evt-5", at=LATER)
    assert group.attempt == 3
    assert group.status is S.DEPLOYING
    assert _requests(group) == [
        (DEPLOY, 1),
        (DEPLOY, 2),
        (DEPLOY, 3),
    ]


def test_later_stages_are_requested_with_the_current_attempt() -> None:
    group = _group(S.FAILED, attempt=1)
    group.start(DEPLOY, event_id="evt-1", at=LATER)
    group.finish(DEPLOY, OK, attempt=2, event_id="evt-2", at=LATER)
    group.start(PXE_BOOT, event_id="evt-3", at=LATER)
    group.finish(PXE_BOOT, OK, attempt=2, event_id="evt-4", at=LATER)
    group.start(VALIDATE, event_id="evt-5", at=LATER)

    assert group.attempt == 2
    assert _requests(group) == [
        (DEPLOY, 2),
        (PXE_BOOT, 2),
        (VALIDATE, 2),
    ]


# ---------------------------------------------------------------------------------------
# start(): exhaustively
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "stage", "expected"), _start_cases(moves=True))
def test_start_from_allowed_status_enters_running_status_and_requests_the_stage(
    status: ImageGroupStatus, stage: StageName, expected: ImageGroupStatus
) -> None:
    group = _group(status)

    group.start(stage, event_id="evt-start", at=LATER)

    assert group.status is expected
    assert group.updated_at == LATER
    assert recorded_moves(group) == [Transition(GROUP_ID, status, expected, "evt-start", LATER)]
    assert len(_requests(group)) == 1
    assert _requests(group)[0][0] is stage


@pytest.mark.parametrize(("status", "stage", "expected"), _start_cases(moves=False))
def test_start_from_any_other_status_is_an_invalid_transition_and_changes_nothing(
    status: ImageGroupStatus, stage: StageName, expected: type[DomainError]
) -> None:
    group = _group(status)
    before = _snapshot(group)

    with pytest.raises(expected):
        group.start(stage, event_id="evt-start", at=LATER)

    assert _snapshot(group) == before


@pytest.mark.parametrize(
    ("stage", "status", "expected"),
    [
        (DEPLOY, S.BUILT, S.DEPLOYING),
        (PXE_BOOT, S.DEPLOYED, S.RESTARTING),
        (VALIDATE, S.RESTARTED, S.VALIDATING),
    ],
)
def test_start_starts_the_stage_it_is_given(
    stage: StageName, status: ImageGroupStatus, expected: ImageGroupStatus
) -> None:
    group = _group(status)

    group.start(stage, event_id="evt-start", at=LATER)

    assert group.status is expected


@pytest.mark.parametrize("stage", [s for s in StageName if s.is_build()])
def test_build_stages_cannot_be_started_or_finished_on_an_existing_group(
    stage: StageName,
) -> None:
    group = _group(S.BUILT)

    with pytest.raises(ValueError, match="not a stage of an existing group"):
        group.start(stage, event_id="evt", at=LATER)
    with pytest.raises(ValueError, match="not a stage of an existing group"):
        group.finish(stage, OK, attempt=None, event_id="evt", at=LATER)

    assert group.status is S.BUILT
    assert recorded_moves(group) == []


# ---------------------------------------------------------------------------------------
# clean(): exhaustively
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status", [pytest.param(s, id=str(s)) for s, ok in CLEAN_TABLE.items() if ok]
)
def test_cleanup_from_a_cleanable_status_moves_group_to_cleaned(status: ImageGroupStatus) -> None:
    group = _group(status)

    group.clean(event_id="evt-clean", at=LATER)

    assert group.status is S.CLEANED
    assert group.updated_at == LATER
    assert recorded_moves(group) == [Transition(GROUP_ID, status, S.CLEANED, "evt-clean", LATER)]
    assert _requests(group) == []


@pytest.mark.parametrize(
    "status", [pytest.param(s, id=str(s)) for s, ok in CLEAN_TABLE.items() if not ok]
)
def test_cleanup_while_a_stage_runs_or_after_cleaning_is_refused(
    status: ImageGroupStatus,
) -> None:
    group = _group(status)
    before = _snapshot(group)

    with pytest.raises(InvalidStateTransitionError) as caught:
        group.clean(event_id="evt-clean", at=LATER)

    assert caught.value.target == S.CLEANED
    assert _snapshot(group) == before


# ---------------------------------------------------------------------------------------
# The transition graph
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", list(ImageGroupStatus), ids=str)
def test_allowed_transitions_match_the_documented_moves(status: ImageGroupStatus) -> None:
    assert ALLOWED_TRANSITIONS[status] == EXPECTED_ALLOWED[status]


def test_every_status_is_reachable_from_creation() -> None:
    seen = {S.BUILT}
    queue = deque([S.BUILT])
    while queue:
        for target in ALLOWED_TRANSITIONS[queue.popleft()]:
            if target not in seen:
                seen.add(target)
                queue.append(target)

    assert seen == set(ImageGroupStatus)


def test_terminal_statuses_are_passed_failed_and_cleaned() -> None:
    assert {s for s in ImageGroupStatus if s.is_terminal()} == {S.PASSED, S.FAILED, S.CLEANED}


def test_cleaned_has_no_way_out() -> None:
    assert ALLOWED_TRANSITIONS[S.CLEANED] == frozenset()


def test_only_redeploy_and_cleanup_leave_failed_and_only_cleanup_leaves_passed() -> None:
    assert ALLOWED_TRANSITIONS[S.FAILED] == frozenset({S.DEPLOYING, S.CLEANED})
    assert ALLOWED_TRANSITIONS[S.PASSED] == frozenset({S.CLEANED})


@pytest.mark.parametrize("status", list(ImageGroupStatus), ids=str)
def test_next_stage_follows_a_successful_stage_and_never_redeploys(
    status: ImageGroupStatus,
) -> None:
    assert next_stage(status) == EXPECTED_NEXT_STAGE[status]


def test_happy_path_walks_built_to_passed_recording_each_move() -> None:
    group = _group(S.BUILT)
    group.start(DEPLOY, event_id="e1", at=LATER)
    group.finish(DEPLOY, OK, attempt=1, event_id="e2", at=LATER)
    group.start(PXE_BOOT, event_id="e3", at=LATER)
    group.finish(PXE_BOOT, OK, attempt=1, event_id="e4", at=LATER)
    group.start(VALIDATE, event_id="e5", at=LATER)
    group.finish(VALIDATE, OK, attempt=1, event_id="e6", at=LATER)

    assert [(t.from_status, t.to_status, t.event_id) for t in recorded_moves(group)] == [
        (S.BUILT, S.DEPLOYING, "e1"),
        (S.DEPLOYING, S.DEPLOYED, "e2"),
        (S.DEPLOYED, S.RESTARTING, "e3"),
        (S.RESTARTING, S.RESTARTED, "e4"),
        (S.RESTARTED, S.VALIDATING, "e5"),
        (S.VALIDATING, S.PASSED, "e6"),
    ]
    assert group.status is S.PASSED


# ---------------------------------------------------------------------------------------
# Errors carry their ids
# ---------------------------------------------------------------------------------------


def test_invalid_transition_error_carries_group_current_target_and_allowed_set() -> None:
    group = _group(S.BUILT)

    with pytest.raises(InvalidStateTransitionError) as caught:
        group.start(VALIDATE, event_id="evt", at=LATER)

    error = caught.value
    assert error.image_group_id == "group-1"
    assert error.current == "BUILT"
    assert error.target == "VALIDATING"
    assert error.allowed == ("CLEANED", "DEPLOYING")
    message = str(error)
    assert "'group-1'" in message
    assert "BUILT" in message
    assert "VALIDATING" in message
    assert "CLEANED, DEPLOYING" in message


def test_invalid_transition_error_from_cleaned_says_nothing_is_allowed() -> None:
    group = _group(S.CLEANED)

    with pytest.raises(InvalidStateTransitionError, match=r"allowed from CLEANED: nothing") as c:
        group.clean(event_id="evt", at=LATER)

    assert c.value.allowed == ()


def test_stale_result_error_carries_group_current_status_and_stage() -> None:
    group = _group(S.PASSED)

    with pytest.raises(StaleResultError) as caught:
        group.finish(PXE_BOOT, OK, attempt=None, event_id="evt", at=LATER)

    assert caught.value.image_group_id == "group-1"
    assert caught.value.current == "PASSED"
    assert caught.value.stage == "pxe-boot"


def test_transition_errors_are_domain_errors() -> None:
    assert issubclass(InvalidStateTransitionError, DomainError)
    assert issubclass(StaleResultError, DomainError)
    assert not issubclass(StaleResultError, InvalidStateTransitionError)
    assert not issubclass(InvalidStateTransitionError, StaleResultError)


# ---------------------------------------------------------------------------------------
# Creation and identity
# ---------------------------------------------------------------------------------------


def test_create_starts_built_at_attempt_one_and_records_its_creation() -> None:
    images = [
        Image("image-1", RoleName("compute"), "compute.img"),
        Image("image-2", RoleName("login"), "login-v2.img"),
    ]

    group = ImageGroup.create(GROUP_ID, JOB_ID, images, event_id="evt-built", at=CREATED)

    assert group.id == GROUP_ID
    assert group.job_id == JOB_ID
    assert group.status is S.BUILT
    assert group.attempt == 1
    assert group.images == tuple(images)
    assert group.created_at == CREATED
    assert group.updated_at == CREATED
    assert recorded_moves(group) == [Transition(GROUP_ID, None, S.BUILT, "evt-built", CREATED)]
    assert _requests(group) == []


def test_create_refuses_a_group_without_images() -> None:
    with pytest.raises(ValueError, match=r"group-1.*at least one image"):
        ImageGroup.create(GROUP_ID, JOB_ID, [], event_id="evt-built", at=CREATED)


def test_every_successful_move_appends_exactly_one_transition_with_its_event_and_time() -> None:
    group = ImageGroup.create(
        GROUP_ID,
        JOB_ID,
        [Image("image-1", RoleName("compute"), "compute.img")],
        event_id="e0",
        at=CREATED,
    )

    def check_one_more(event_id: str, at: datetime, previous: ImageGroupStatus) -> None:
        assert len(recorded_moves(group)) == count + 1
        assert recorded_moves(group)[-1] == Transition(
            GROUP_ID, previous, group.status, event_id, at
        )
        assert group.updated_at == at

    count = len(recorded_moves(group))
    t1 = CREATED + timedelta(seconds=1)
    group.start(DEPLOY, event_id="e1", at=t1)
    check_one_more("e1", t1, S.BUILT)

    count = len(recorded_moves(group))
    t2 = CREATED + timedelta(seconds=2)
    group.finish(DEPLOY, StageOutcome.FAILED, attempt=None, event_id="e2", at=t2)
    check_one_more("e2", t2, S.DEPLOYING)

    count = len(recorded_moves(group))
    t3 = CREATED + timedelta(seconds=3)
    group.clean(event_id="e3", at=t3)
    check_one_more("e3", t3, S.FAILED)

    assert group.created_at == CREATED
    assert [t.to_status for t in recorded_moves(group)] == [
        S.BUILT,
        S.DEPLOYING,
        S.FAILED,
        S.CLEANED,
    ]


def test_image_groups_compare_and_hash_by_id_only() -> None:
    first = _group(S.BUILT)
    same_id = _group(S.FAILED, attempt=4)
    other = ImageGroup(
        id=ImageGroupId("group-2"),
        job_id=JOB_ID,
        status=S.BUILT,
        images=first.images,
        created_at=CREATED,
        updated_at=CREATED,
    )

    assert first == same_id
    assert hash(first) == hash(same_id)
    assert first != other
    assert len({first, same_id, other}) == 2
    assert first != "group-1"


def test_images_compare_by_id_only() -> None:
    assert Image("image-1", RoleName("compute"), "compute.img") == Image(
        "image-1", RoleName("compute"), "compute-v2.img"
    )


@pytest.mark.parametrize(
    "name", ["", " compute.img", "compute.img ", " "], ids=["empty", "leading", "trailing", "blank"]
)
def test_image_refuses_an_empty_or_untrimmed_image_name(name: str) -> None:
    with pytest.raises(ValueError, match=r"compute"):
        Image("image-1", RoleName("compute"), name)
