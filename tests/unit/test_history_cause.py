"""Every move records why it happened (docs/contract.md §4 `cause`), and keeps it for good."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

from domain import (
    STAGE_TIMEOUT,
    CauseKind,
    Image,
    ImageGroup,
    ImageGroupId,
    ImageGroupStatus,
    RoleName,
    StageName,
    StageOutcome,
    Transition,
    TransitionCause,
)
from persistence.memory import MemoryState, MemoryUnitOfWork
from tests.recorded import moves as _moves
from workers import outbox
from workers.edge.accept import CatalogParsedEvent, StageFinishedEvent
from workers.handlers import (
    Deps,
    cleanup,
    expire_overdue,
    handle_catalog_parsed,
    handle_stage_finished,
    request_stage,
)
from workers.outbox import FollowOns

S = ImageGroupStatus
JOB = "0b6a6f0e-1b8e-4a53-9f57-6a8c4c1f0c11"
REQUEST = "5c3e7a10-9b2d-4f61-8e0a-1d2c3b4a5f60"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
EVENT = CauseKind.EVENT


class Pipeline:
    """One group on an in-memory store, driven through the real handlers."""

    def __init__(self, timeout: timedelta | None = None) -> None:
        self.state = MemoryState()
        self.now = T0
        numbers: Iterator[int] = count(1)
        self.deps = Deps(
            new_uow=lambda: MemoryUnitOfWork(self.state, FollowOns()),
            clock=lambda: self.now,
            new_id=lambda: f"00000000-0000-4000-8000-{next(numbers):012d}",
            stage_timeouts={} if timeout is None else {StageName.DEPLOY: timeout},
        )
        event = outbox.catalog_parsed(JOB, "g1", ["compute"])
        handle_catalog_parsed(CatalogParsedEvent.model_validate(event).to_command(), deps=self.deps)

    def finish(self, stage: str, outcome: str, **fields: Any) -> str:
        self.now += timedelta(seconds=1)
        event = outbox.stage_finished(JOB, stage, outcome, **fields)
        command = StageFinishedEvent.model_validate(event).to_command()
        handle_stage_finished(command, deps=self.deps)
        return str(event["event_id"])

    def moves(self) -> list[tuple[S | None, S, TransitionCause]]:
        return [(t.from_status, t.to_status, t.cause) for t in self.state.history]


def test_a_build_result_records_itself_as_the_cause_of_the_creation_and_the_deploy_request() -> (
    None
):
    pipeline = Pipeline()
    pipeline.finish("build-image", "succeeded")

    built = TransitionCause.event(
        "stage.finished", StageName.BUILD_IMAGE, StageOutcome.SUCCEEDED, attempt=1
    )
    assert pipeline.moves() == [(None, S.BUILT, built), (S.BUILT, S.DEPLOYING, built)]


def test_a_failed_result_records_its_stage_attempt_outcome_and_error() -> None:
    pipeline = Pipeline()
    pipeline.finish("build-image", "succeeded")
    pipeline.finish("deploy", "failed", error_code="E_DEPLOY", error_summary="node n2 down")

    assert pipeline.moves()[-1] == (
        S.DEPLOYING,
        S.FAILED,
        TransitionCause(
            kind=EVENT,
            event_type="stage.finished",
            stage=StageName.DEPLOY,
            attempt=1,  # the event named none: the group's attempt
            outcome=StageOutcome.FAILED,
            error_code="E_DEPLOY",
            error_summary="node n2 down",
        ),
    )


def test_the_stage_a_success_starts_carries_the_cause_of_that_success() -> None:
    pipeline = Pipeline()
    pipeline.finish("build-image", "succeeded")
    pipeline.finish("deploy", "succeeded", attempt=1)

    deployed, restarting = pipeline.moves()[-2:]
    assert (deployed[1], restarting[1]) == (S.DEPLOYED, S.RESTARTING)
    assert deployed[2] == restarting[2]
    assert (restarting[2].stage, restarting[2].outcome) == (
        StageName.DEPLOY,
        StageOutcome.SUCCEEDED,
    )


def test_attempt_one_failure_keeps_its_cause_after_a_redeploy_fails_again() -> None:
    pipeline = Pipeline()
    pipeline.finish("build-image", "succeeded")
    pipeline.finish("deploy", "failed", attempt=1, error_code="E_ONE", error_summary="first")
    request_stage("g1", StageName.DEPLOY, deps=pipeline.deps)
    pipeline.finish("deploy", "failed", attempt=2, error_code="E_TWO", error_summary="second")

    failures = [c for _, to, c in pipeline.moves() if to is S.FAILED]
    assert [(c.attempt, c.error_code, c.error_summary) for c in failures] == [
        (1, "E_ONE", "first"),
        (2, "E_TWO", "second"),
    ]
    redeploy = pipeline.moves()[-2]
    assert redeploy == (
        S.FAILED,
        S.DEPLOYING,
        TransitionCause(
            CauseKind.OPERATOR, stage=StageName.DEPLOY, attempt=2, command="request deploy"
        ),
    )


def test_a_missed_deadline_is_named_with_stage_timeout_in_history_and_in_the_stage_row() -> None:
    pipeline = Pipeline(timeout=timedelta(minutes=5))
    pipeline.finish("build-image", "succeeded")
    pipeline.now += timedelta(minutes=10)

    [expired] = expire_overdue(deps=pipeline.deps)

    _, to, cause = pipeline.moves()[-1]
    assert (to, cause.kind, cause.stage, cause.attempt) == (
        S.FAILED,
        CauseKind.DEADLINE,
        "deploy",
        1,
    )
    assert (cause.outcome, cause.error_code) == (StageOutcome.FAILED, STAGE_TIMEOUT)
    assert cause.event_type is None and cause.command is None
    assert cause.error_summary == pipeline.state.stages[(JOB, "deploy")].error_summary
    assert (
        cause.error_summary is not None and "no deploy result for attempt 1" in cause.error_summary
    )
    assert pipeline.state.history[-1].event_id == expired.event_id


def test_cleanup_names_the_operator_command_and_no_stage_or_attempt() -> None:
    pipeline = Pipeline()
    pipeline.finish("build-image", "succeeded")
    pipeline.finish("deploy", "failed")
    cleanup("g1", deps=pipeline.deps)

    assert pipeline.moves()[-1][2] == TransitionCause(CauseKind.OPERATOR, command="cleanup")


def test_the_inbox_keeps_the_job_and_what_the_event_answers() -> None:
    pipeline = Pipeline()
    pipeline.finish("build-image", "succeeded")
    answered = pipeline.finish("deploy", "succeeded", attempt=1, request_event_id=REQUEST)
    caused = pipeline.finish("pxe-boot", "succeeded", causation_id=REQUEST.replace("5c", "6d"))

    records = pipeline.state.inbox_records
    assert (records[answered].job_id, records[answered].causation_id) == (JOB, REQUEST)
    assert records[caused].causation_id == REQUEST.replace("5c", "6d")


def test_a_repeated_delivery_counts_a_duplicate_and_changes_nothing_else() -> None:
    pipeline = Pipeline()
    event = outbox.stage_finished(JOB, "build-image", "succeeded")
    command = StageFinishedEvent.model_validate(event).to_command()
    handle_stage_finished(command, deps=pipeline.deps)
    history = list(pipeline.state.history)

    for _ in range(2):
        again = handle_stage_finished(command, deps=pipeline.deps)
        assert again.outcome.outcome == "duplicate"

    record = pipeline.state.inbox_records[str(event["event_id"])]
    assert (record.outcome, record.duplicates, record.deliveries) == ("applied", 2, 3)
    assert pipeline.state.history == history


# The aggregate on its own -----------------------------------------------------------------


def _group() -> ImageGroup:
    image = Image("i-1", RoleName("compute"), "compute.img")
    return ImageGroup.create(ImageGroupId("g1"), JOB, [image], event_id="e0", at=T0)


def test_a_move_made_without_a_cause_records_an_unknown_one_unchanged() -> None:
    group = _group()
    group.start(StageName.DEPLOY, event_id="e1", at=T0)

    assert [t.cause for t in _moves(group)] == [TransitionCause(), TransitionCause()]


def test_a_cause_that_names_its_attempt_is_recorded_as_given() -> None:
    group = _group()
    given = TransitionCause.event(
        "stage.finished", StageName.DEPLOY, StageOutcome.FAILED, attempt=1
    )
    group.start(StageName.DEPLOY, event_id="e1", at=T0)
    group.finish(
        StageName.DEPLOY, StageOutcome.FAILED, attempt=1, event_id="e2", at=T0, cause=given
    )

    assert _moves(group)[-1] == Transition(
        ImageGroupId("g1"), S.DEPLOYING, S.FAILED, "e2", T0, given
    )


def test_a_stale_result_records_no_move_and_its_outcome_in_the_inbox() -> None:
    pipeline = Pipeline()
    pipeline.finish("build-image", "succeeded")
    pipeline.finish("deploy", "failed")
    request_stage("g1", StageName.DEPLOY, deps=pipeline.deps)
    before = len(pipeline.state.history)

    stale = pipeline.finish("deploy", "succeeded", attempt=1)

    assert len(pipeline.state.history) == before
    assert pipeline.state.inbox_records[stale].outcome == "stale"
