"""`trace` assembled from stored rows alone (workers/cli/trace_model.py): no database needed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from domain import (
    CauseKind,
    DeadLetter,
    DeadLetterStatus,
    ImageGroupId,
    ImageGroupStatus,
    InboxRecord,
    OutboxMessage,
    StageName,
    StageOutcome,
    Transition,
    TransitionCause,
)
from workers.cli.trace_model import TraceRows, trace_document

S = ImageGroupStatus
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
GROUP = ImageGroupId("g1")
JOB = "job-1"
STAGE = "imagegroups.stage_finished"
CATALOG = "imagegroups.catalog_parsed"


def ms(n: float) -> datetime:
    return T0 + timedelta(milliseconds=n)


def event(stage: StageName, outcome: StageOutcome, attempt: int = 1) -> TransitionCause:
    return TransitionCause.event("stage.finished", stage, outcome, attempt=attempt)


BUILT = event(StageName.BUILD_IMAGE, StageOutcome.SUCCEEDED)
FAILED = TransitionCause.event(
    "stage.finished", StageName.DEPLOY, StageOutcome.FAILED, attempt=1, error_code="E_DEPLOY"
)
REDEPLOY = TransitionCause(
    CauseKind.OPERATOR, stage=StageName.DEPLOY, attempt=2, command="request deploy"
)


def move(old: S | None, new: S, event_id: str, at: datetime, cause: TransitionCause) -> Transition:
    return Transition(GROUP, old, new, event_id, at, cause)


def request(
    event_id: str, cause: str, written: datetime, sent: float | None, attempt: int
) -> OutboxMessage:
    body = {
        "event_id": event_id,
        "event_type": "deploy.requested",
        "causation_id": cause,
        "payload": {"image_group_id": "g1", "attempt": attempt, "images": []},
    }
    return OutboxMessage(
        event_id, "pipeline.deploy", "pipeline.deploy", body, "g1", written,
        None if sent is None else ms(sent),
    )  # fmt: skip


def letter(letter_id: int, event_id: str | None, status: DeadLetterStatus, **kw: Any) -> DeadLetter:
    fields: dict[str, Any] = {
        "id": letter_id,
        "task_name": STAGE,
        "event_id": event_id,
        "body": "[]",
        "content_type": "application/json",
        "error_type": "OperationalError",
        "error_message": "database down",
        "traceback": None,
        "attempts": 8,
        "status": status,
        "first_failed_at": ms(10),
        "last_failed_at": ms(20),
    }
    return DeadLetter(**(fields | kw))


def redeployed() -> TraceRows:
    """catalog, build (-> deploy.requested 1), deploy failed, operator redeploy (-> request 2),
    a late attempt-1 result (stale), and the catalog sent again (duplicate)."""
    return TraceRows(
        image_group_id="g1",
        transitions=[
            move(None, S.BUILT, "build", ms(100), BUILT),
            move(S.BUILT, S.DEPLOYING, "build", ms(100), BUILT),
            move(S.DEPLOYING, S.FAILED, "failed", ms(900), FAILED),
            move(S.FAILED, S.DEPLOYING, "redeploy", ms(2000), REDEPLOY),
        ],
        inbox=[
            InboxRecord("catalog", CATALOG, "applied", ms(0), JOB),
            InboxRecord("build", STAGE, "applied", ms(100), JOB, None, deliveries=2, duplicates=1),
            InboxRecord("failed", STAGE, "applied", ms(900), JOB, "req-1", deliveries=3),
            InboxRecord("late", STAGE, "stale", ms(3000), JOB, "req-1"),
        ],
        follow_ons=[
            request("req-1", "build", ms(100), 112.5, 1),
            request("req-2", "redeploy", ms(2000), None, 2),
        ],
    )


def test_events_in_and_follow_ons_out_are_oldest_first_and_linked_by_causation_id() -> None:
    events = trace_document(redeployed())["events"]

    assert [(e["event_id"], e["direction"], e["outcome"]) for e in events] == [
        ("catalog", "in", "applied"),
        ("build", "in", "applied"),
        ("req-1", "out", "sent"),
        ("failed", "in", "applied"),
        ("redeploy", "in", "applied"),
        ("req-2", "out", "pending"),
        ("late", "in", "stale"),
    ]
    by_id = {e["event_id"]: e for e in events}
    assert by_id["req-1"]["causation_id"] == "build"
    assert by_id["req-1"]["after_ms"] == 12.5  # from the result handled to its follow-on sent
    assert by_id["failed"]["after_ms"] == 787.5  # from the request sent to its answer handled
    assert by_id["req-2"]["causation_id"] == "redeploy"
    assert by_id["req-2"]["at"] == ms(2000).isoformat()  # not sent yet: when it was written
    assert by_id["catalog"]["after_ms"] is None


def test_each_entry_has_the_contract_keys_and_one_shape() -> None:
    document = trace_document(redeployed())

    assert set(document) == {"image_group_id", "events"}
    contract = ["event_id", "direction", "event_type", "causation_id", "at", "outcome"]
    shapes = {tuple(e) for e in document["events"]}
    assert len(shapes) == 1
    assert list(shapes.pop())[:7] == [*contract, "deliveries"]
    types = [e["event_type"] for e in document["events"]]
    assert types == [
        "catalog.parsed",
        "stage.finished",
        "deploy.requested",
        "stage.finished",
        None,  # an operator's command: its cause says which
        "deploy.requested",
        "stage.finished",
    ]


def test_deliveries_count_every_delivery_and_duplicates_those_after_it_was_handled() -> None:
    by_id = {e["event_id"]: e for e in trace_document(redeployed())["events"]}

    assert (by_id["failed"]["deliveries"], by_id["failed"]["duplicates"]) == (3, 0)
    assert (by_id["build"]["deliveries"], by_id["build"]["duplicates"]) == (2, 1)
    assert by_id["req-1"]["deliveries"] is None


def test_the_history_cause_of_a_move_rides_on_its_event_and_names_operator_commands() -> None:
    by_id = {e["event_id"]: e for e in trace_document(redeployed())["events"]}

    assert by_id["failed"]["cause"]["error_code"] == "E_DEPLOY"
    assert by_id["redeploy"]["cause"]["kind"] == "operator"
    assert by_id["redeploy"]["cause"]["command"] == "request deploy"
    assert (by_id["redeploy"]["attempt"], by_id["req-2"]["attempt"]) == (2, 2)
    assert by_id["late"]["cause"] is None  # stale: it moved nothing


def test_an_applied_event_pruned_from_the_inbox_still_shows_from_the_history() -> None:
    rows = redeployed()
    pruned = TraceRows("g1", rows.transitions, [r for r in rows.inbox if r.event_id != "failed"])

    failed = next(e for e in trace_document(pruned)["events"] if e["event_id"] == "failed")

    assert (failed["outcome"], failed["event_type"], failed["deliveries"]) == (
        "applied",
        "stage.finished",
        None,
    )
    assert failed["at"] == ms(900).isoformat()


def test_a_replayed_dead_letter_shows_its_lineage_and_adds_its_deliveries() -> None:
    rows = redeployed()
    letters = [
        letter(3, "failed", DeadLetterStatus.REPLAYED),
        letter(5, "failed", DeadLetterStatus.REPLAYED, replay_of=3, attempts=2),
    ]
    with_letters = TraceRows("g1", rows.transitions, rows.inbox, (), letters)

    failed = next(e for e in trace_document(with_letters)["events"] if e["event_id"] == "failed")

    assert [(d["id"], d["replay_of"], d["status"]) for d in failed["dead_letters"]] == [
        (3, None, "replayed"),
        (5, 3, "replayed"),
    ]
    assert failed["deliveries"] == 8 + 2 + 3
    assert failed["outcome"] == "applied"


def test_an_event_only_in_the_dead_letter_store_is_dead_lettered() -> None:
    letters = [
        letter(7, "lost", DeadLetterStatus.DEAD),
        letter(8, None, DeadLetterStatus.DEAD, first_failed_at=ms(30)),
    ]
    events = trace_document(TraceRows("g1", [], dead_letters=letters))["events"]

    assert [(e["event_id"], e["outcome"], e["deliveries"]) for e in events] == [
        ("lost", "dead-lettered", 8),
        (None, "dead-lettered", 8),
    ]
    assert events[0]["event_type"] == "stage.finished"
