"""Faults: bad input refused with its reason, and a dead letter replayed to completion.

A poison message's attempt cap and a database outage mid-flow are proved in the fault tier
(tests/faults/test_regressions.py, tests/faults/test_crashes.py) with its invariants."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from kombu.messaging import Producer

from domain import DeadLetter, ImageGroupStatus
from tests.integration.flow import HAPPY, moves, new_job, start_group, wait_status
from tests.integration.stack import Stack, stack, wait_for
from workers import outbox

pytestmark = pytest.mark.integration

STAGE = "imagegroups.stage_finished"
CATALOG = "imagegroups.catalog_parsed"


def _letters(s: Stack) -> list[DeadLetter]:
    return s.query(lambda uow: uow.dead_letters.list())


def _send_raw(s: Stack, body: bytes | str, content_type: str, task: str = STAGE) -> None:
    with s.client.connection_for_write() as conn:
        Producer(conn).publish(  # type: ignore[no-untyped-call]
            body,
            exchange="imagegroups.events",
            routing_key="imagegroups.events",
            content_type=content_type,
            content_encoding="utf-8" if isinstance(body, str) else "binary",
            headers={"task": task, "id": str(uuid.uuid4()), "lang": "py", "retries": 0},
            declare=[],
        )


def _bad_events(job: str, group_id: str) -> list[tuple[str, Any, str]]:
    good = outbox.stage_finished(job, "validate", "succeeded")
    payload = good["payload"]
    return [
        (STAGE, [1, 2], "event must be a JSON object"),
        (STAGE, {k: v for k, v in good.items() if k != "job_id"}, "job_id: Field required"),
        (STAGE, {**good, "surprise": 1}, "surprise: Extra inputs are not permitted"),
        (STAGE, {**good, "payload": {**payload, "attempt": "1"}}, "payload.attempt"),
        (STAGE, {**good, "event_id": "not-a-uuid"}, "event_id: Input should be a valid UUID"),
        (STAGE, {**good, "schema_version": 2}, "unsupported schema_version 2"),
        (STAGE, {**good, "payload": {**payload, "stage": "reboot"}}, "payload.stage"),
        (
            STAGE,
            {**good, "payload": {**payload, "result_detail": {"log": "x" * 70_000}}},
            "result_detail is",
        ),
        (CATALOG, outbox.catalog_parsed(job, "g" * 129, ["compute"]), "at most 128"),
        (CATALOG, outbox.catalog_parsed(job, "bad\x07id", ["compute"]), "image_group_id"),
        (
            # Its column is a 32-bit INTEGER: refused as invalid, not a database error.
            STAGE,
            outbox.stage_finished(new_job(), "build-image", "failed", attempt=2**31),
            "payload.attempt: Input should be less than or equal to 2147483647",
        ),
        # Valid envelopes the state machine or the reservations refuse:
        (STAGE, good, "InvalidStateTransitionError"),
        (
            STAGE,
            outbox.stage_finished(job, "deploy", "succeeded", image_group_id="other"),
            "ImageGroupMismatchError",
        ),
        (
            CATALOG,
            outbox.catalog_parsed(new_job(), group_id, ["compute"]),
            "DuplicateImageGroupError",
        ),
    ]


def test_bad_input_is_dead_lettered_with_a_clear_reason_and_changes_nothing(
    tmp_path: Path,
) -> None:
    with stack(tmp_path, "badinput") as s:
        s.start_worker("--concurrency", "2")
        job = new_job()
        start_group(s, "held-1", job)
        wait_status(s, "held-1", "DEPLOYING")
        before = moves(s, "held-1")

        cases = _bad_events(job, "held-1")
        for task, event, _ in cases:
            s.client.send_task(task, kwargs={"event": event}, queue="imagegroups.events")
        _send_raw(s, "{this is not json", "application/json")
        import pickle

        _send_raw(s, pickle.dumps(([], {"event": {}}, {})), "application/x-python-serialize")
        # Valid JSON, but not a Celery body [args, kwargs, embed]: Celery itself would let
        # these escape and stop the consumer.
        _send_raw(s, json.dumps([[], {"event": {}}]), "application/json")
        _send_raw(s, json.dumps({"a": 1}), "application/json")
        expected = len(cases) + 4
        wait_for(
            lambda: len(_letters(s)) >= expected,
            timeout=30,
            what=f"{expected} dead letters",
        )
        letters = _letters(s)
        assert len(letters) == expected
        for (_, _, reason), letter in zip(cases, _in_send_order(letters, cases), strict=True):
            assert reason in f"{letter.error_type}: {letter.error_message}", letter
            assert letter.attempts == 1
        undecodable = [d for d in letters if d.error_type == "UndecodableMessageError"]
        assert len(undecodable) == 2
        malformed = [d for d in letters if d.error_type == "InvalidTaskMessageError"]
        assert sorted(d.body for d in malformed) == ['[[], {"event": {}}]', '{"a": 1}']
        assert any("{this is not json" in d.body for d in undecodable)
        assert {d.content_type for d in undecodable} == {
            "application/json",
            "application/x-python-serialize",
        }

        # Nothing changed, and the worker keeps going.
        assert moves(s, "held-1") == before
        group = s.group("held-1")
        assert group is not None and group.status is ImageGroupStatus.DEPLOYING
        start_group(s, "after-bad-1", new_job())
        wait_status(s, "after-bad-1", "DEPLOYING")


def _in_send_order(letters: list[DeadLetter], cases: list[Any]) -> list[DeadLetter]:
    """Match letters to cases by their stored body (workers may finish out of order)."""
    ordered = []
    letters = [
        d
        for d in letters
        if d.task_name in (STAGE, CATALOG)
        and d.attempts == 1
        and d.error_type not in ("UndecodableMessageError", "InvalidTaskMessageError")
    ]
    for task, event, _ in cases:
        body = json.dumps(event, default=str)
        ordered.append(
            next(
                d
                for d in letters
                if d.task_name == task and json.dumps(json.loads(d.body)[1]["event"]) == body
            )
        )
    return ordered


def test_a_stage_result_before_its_catalog_is_replayed_to_completion(tmp_path: Path) -> None:
    with stack(tmp_path, "replay", IMAGEGROUPS_MAX_ATTEMPTS="2") as s:
        worker = s.start_worker("--concurrency", "1")
        job = new_job()
        early = outbox.stage_finished(job, "build-image", "succeeded")
        outbox.send(s.client, early)
        letters = wait_for(lambda: _letters(s), timeout=30, what="the early result to die")
        assert letters[0].error_type == "CatalogNotParsedError"
        assert letters[0].attempts == 2

        outbox.send(s.client, outbox.catalog_parsed(job, "late-catalog", ["compute"]))
        wait_for(
            lambda: s.query(lambda u: u.catalogs.find_by_job_id(job)),
            timeout=20,
            what="the catalog",
        )
        s.run_cli("dead-letters", "replay", str(letters[0].id))
        wait_status(s, "late-catalog", "DEPLOYING")
        assert _letters(s)[0].status == "replayed"

        s.run_cli("dead-letters", "replay", "--force", str(letters[0].id))
        line = f"event_id={early['event_id']}"
        wait_for(
            lambda: any(
                line in row and "outcome=duplicate" in row for row in worker.output().splitlines()
            ),
            timeout=20,
            what="the second replay to be a duplicate",
        )
        assert len(_letters(s)) == 1
        assert moves(s, "late-catalog") == HAPPY[:2]


def test_copies_of_an_early_stage_result_run_one_retry_chain_which_outlasts_their_catalog(
    tmp_path: Path,
) -> None:
    # With these, one chain of 8 deliveries spans at least 9.75 s; three copies counted
    # against the event's one budget used it up within 3.5 s of their first failures.
    slow = {"IMAGEGROUPS_RETRY_BACKOFF_BASE": "0.5", "IMAGEGROUPS_RETRY_BACKOFF_MAX": "4"}
    with stack(tmp_path, "copies", **slow) as s:
        worker = s.start_worker("--concurrency", "2")
        job = new_job()
        early = outbox.stage_finished(job, "build-image", "succeeded")
        copies = [str(uuid.uuid4()) for _ in range(3)]
        for task_id in copies:
            outbox.send(s.client, early, task_id=task_id)

        def lines(outcome: str) -> list[str]:
            event = f"event_id={early['event_id']}"
            return [
                line
                for line in worker.output().splitlines()
                if event in line and f"outcome={outcome}" in line
            ]

        wait_for(lambda: len(lines("duplicate")) >= 2, timeout=20, what="two copies to end")
        holder = s.query(lambda uow: uow.deliveries.chain_holder(early["event_id"]))
        assert holder in copies
        ended = {t for t in copies for line in lines("duplicate") if f"task_id={t} " in line}
        assert ended == set(copies) - {holder}

        outbox.send(s.client, outbox.catalog_parsed(job, "late-catalog", ["compute"]))
        wait_status(s, "late-catalog", "DEPLOYING")
        applied = lines("applied")
        assert len(applied) == 1 and f"task_id={holder}" in applied[0]
        assert _letters(s) == []
        assert len(lines("duplicate")) == 2
