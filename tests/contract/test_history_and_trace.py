"""Causes in the history and what `trace` reads: the same on every backend (memory, SQL)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from domain import (
    STAGE_TIMEOUT,
    CauseKind,
    DeadLetter,
    DeadLetterStatus,
    Image,
    ImageGroup,
    ImageGroupId,
    OutboxMessage,
    RoleName,
    StageName,
    StageOutcome,
    StatusChanged,
    TransitionCause,
)
from persistence.uow import StoreUnitOfWork

NewUow = Callable[[], StoreUnitOfWork]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
JOB = "6f1c2b3a-0000-4000-8000-000000000001"
OTHER_JOB = "6f1c2b3a-0000-4000-8000-000000000002"
STAGE_TASK = "imagegroups.stage_finished"
CATALOG_TASK = "imagegroups.catalog_parsed"
GROUP = ImageGroupId("g1")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def saved_group(new_uow: NewUow) -> ImageGroup:
    """A group built, deployed to failure, redeployed: four moves, three kinds of cause."""
    built = TransitionCause.event("stage.finished", StageName.BUILD_IMAGE, StageOutcome.SUCCEEDED)
    failed = TransitionCause.event(
        "stage.finished",
        StageName.DEPLOY,
        StageOutcome.FAILED,
        error_code="E\x00DEPLOY",
        error_summary="node n2 down\x00 (NUL kept as text)",
    )
    redeploy = TransitionCause.operator("request deploy", StageName.DEPLOY)
    image = Image("7f1c2b3a-0000-4000-8000-000000000001", RoleName("compute"), "c.img")
    group = ImageGroup.create(
        ImageGroupId("g1"), JOB, [image], event_id="e1", at=at(0), cause=built
    )
    group.start(StageName.DEPLOY, event_id="e1", at=at(0), cause=built)
    group.finish(
        StageName.DEPLOY, StageOutcome.FAILED, attempt=1, event_id="e2", at=at(1), cause=failed
    )
    group.start(StageName.DEPLOY, event_id="c3", at=at(2), cause=redeploy)
    with new_uow() as uow:
        uow.groups.save(group)
        uow.commit()
    return group


def test_the_history_keeps_every_field_of_each_moves_cause(new_uow: NewUow) -> None:
    saved_group(new_uow)

    with new_uow() as uow:
        causes = [t.cause for t in uow.history.list_for_group(ImageGroupId("g1"))]

    assert [c.kind for c in causes] == [CauseKind.EVENT] * 3 + [CauseKind.OPERATOR]
    assert causes[2] == TransitionCause(
        CauseKind.EVENT,
        "stage.finished",
        StageName.DEPLOY,
        1,
        StageOutcome.FAILED,
        "E\\x00DEPLOY",  # stored as text every database takes (persistence/models.py)
        "node n2 down\\x00 (NUL kept as text)",
    )
    assert causes[3] == TransitionCause(
        CauseKind.OPERATOR, stage=StageName.DEPLOY, attempt=2, command="request deploy"
    )
    assert causes[0].attempt == 1 and causes[0].stage is StageName.BUILD_IMAGE


def test_a_deadline_cause_round_trips(new_uow: NewUow) -> None:
    image = Image("7f1c2b3a-0000-4000-8000-000000000002", RoleName("compute"), "c.img")
    group = ImageGroup.create(ImageGroupId("g2"), JOB, [image], event_id="e1", at=at(0))
    group.start(StageName.DEPLOY, event_id="e1", at=at(0), timeout=timedelta(seconds=5))
    group.expire(StageName.DEPLOY, 1, event_id="c2", at=at(10))
    expired = group.recorded(StatusChanged)[-1].transition
    with new_uow() as uow:
        uow.groups.save(group)
        uow.commit()

    with new_uow() as uow:
        last = uow.history.list_for_group(ImageGroupId("g2"))[-1]

    assert (last.cause.kind, last.cause.error_code) == (CauseKind.DEADLINE, STAGE_TIMEOUT)
    assert last.cause == expired.cause


def test_a_duplicate_claim_is_counted_only_when_its_unit_of_work_commits(new_uow: NewUow) -> None:
    with new_uow() as uow:
        claimed = uow.inbox.claim(
            "ev-1", STAGE_TASK, "applied", at(0), job_id=JOB, causation_id="rq", delivery=2
        )
        assert claimed is True
        uow.commit()
    with new_uow() as uow:
        assert uow.inbox.claim("ev-1", STAGE_TASK, "applied", at(1), job_id=JOB) is False
        # rolled back: not counted
    # A second send of the event (its first delivery), then a redelivery counted as the 6th.
    for n, delivery in ((2, 1), (3, 6)):
        with new_uow() as uow:
            claim = uow.inbox.claim("ev-1", STAGE_TASK, "applied", at(n), delivery=delivery)
            assert claim is False
            uow.commit()

    with new_uow() as uow:
        [record] = uow.trace.inbox(JOB, ["ev-1"])

    assert (record.event_id, record.outcome, record.duplicates) == ("ev-1", "applied", 2)
    assert record.deliveries == 6  # 2, then 3 for the second send, then the 6th delivery
    assert (record.job_id, record.causation_id, record.processed_at) == (JOB, "rq", at(0))


def test_the_trace_finds_these_events_and_the_jobs_events_the_history_cannot_name(
    new_uow: NewUow,
) -> None:
    with new_uow() as uow:
        for event_id, task, outcome, job, second in [
            ("catalog", CATALOG_TASK, "applied", JOB, 0),
            ("build", STAGE_TASK, "applied", JOB, 1),
            ("late", STAGE_TASK, "applied", JOB, 3),
            ("other", STAGE_TASK, "stale", OTHER_JOB, 4),
            ("unasked", STAGE_TASK, "applied", JOB, 5),
        ]:
            uow.inbox.claim(event_id, task, outcome, at(second), job_id=job)
        uow.inbox.set_outcome("late", "stale")
        uow.commit()

    with new_uow() as uow:
        found = [r.event_id for r in uow.trace.inbox(JOB, ["build"])]

    # "unasked" is an applied stage result: the history names those, so it is left out.
    assert found == ["catalog", "build", "late"]


def test_the_trace_finds_the_groups_follow_ons_by_the_times_of_its_moves(new_uow: NewUow) -> None:
    def message(event_id: str, group: str, written: datetime) -> OutboxMessage:
        body = {"event_id": event_id, "causation_id": "e1"}
        return OutboxMessage(event_id, "pipeline.deploy", "pipeline.deploy", body, group, written)

    with new_uow() as uow:
        uow.outbox.add(message("rq-1", "g1", at(1)))
        uow.outbox.add(message("rq-2", "g1", at(5)))
        uow.outbox.add(message("rq-other", "g2", at(1)))
        uow.outbox.add(message("rq-unrelated", "g1", at(9)))
        uow.commit()
    with new_uow() as uow:
        uow.outbox.mark_sent(["rq-1"], at(1.5))
        uow.commit()

    with new_uow() as uow:
        found = uow.trace.follow_ons(ImageGroupId("g1"), [at(1), at(5), at(1)])

    assert [(m.event_id, m.sent_at) for m in found] == [("rq-1", at(1.5)), ("rq-2", None)]
    assert found[0].body == {"event_id": "rq-1", "causation_id": "e1"}


def test_the_trace_finds_dead_letters_by_event_or_by_the_job_in_their_body(
    new_uow: NewUow,
) -> None:
    def dead(event_id: str | None, body: str, **kw: object) -> DeadLetter:
        return DeadLetter(
            None, STAGE_TASK, event_id, body, "application/json", "E", "m", None, 3,
            DeadLetterStatus.DEAD, at(0), at(1), **kw,  # type: ignore[arg-type]
        )  # fmt: skip

    with new_uow() as uow:
        first = uow.dead_letters.add(dead("ev-1", "[]"))
        uow.dead_letters.add(dead(None, f'[[], {{"event": {{"job_id": "{JOB}"}}}}, {{}}]'))
        uow.dead_letters.add(dead("ev-9", f'{{"job_id": "{OTHER_JOB}"}}'))
        uow.commit()
    with new_uow() as uow:
        uow.dead_letters.set_status(first, DeadLetterStatus.REPLAYED, at(2))
        replay = uow.dead_letters.add(dead("ev-1", "[1]", replay_of=first))
        uow.commit()

    with new_uow() as uow:
        found = uow.trace.dead_letters(JOB, ["ev-1"])

    assert [(d.event_id, d.replay_of) for d in found] == [
        ("ev-1", None),
        (None, None),
        ("ev-1", first),
    ]
    assert found[-1].id == replay
