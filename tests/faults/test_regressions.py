"""The defects a fault hunt found, each as a test that failed before its fix."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from domain import ImageGroupStatus
from persistence.models import DeliveryRow, ImageGroupRow, StageRow
from tests.faults.checks import (
    broker_is_drained,
    letters,
    letters_for,
    lock_wait_seconds,
    outcome,
    still_consuming,
)
from tests.faults.messages import envelope, push, send_event, task_body, task_headers
from tests.integration.flow import moves, new_job, start_group, wait_status
from tests.integration.stack import Stack, stack, wait_for
from workers import outbox

pytestmark = pytest.mark.faults

STAGE = "imagegroups.stage_finished"
CATALOG = "imagegroups.catalog_parsed"


def deliveries(s: Stack, event_id: str) -> int:
    """How often the worker has received an event (the first delivery is not counted)."""
    with s.engine.connect() as conn:
        counted = conn.scalar(select(DeliveryRow.attempts).where(DeliveryRow.key == event_id))
    return 1 + (counted or 0)


# 1. Retries with the default attempt cap ------------------------------------------------


def test_a_result_retried_past_celerys_default_three_retries_applies_when_its_catalog_comes(
    tmp_path: Path,
) -> None:
    # IMAGEGROUPS_MAX_ATTEMPTS stays at its default (8): Celery's own default of 3 retries
    # must not cut the project's cap short.
    with stack(tmp_path, "late8", IMAGEGROUPS_RETRY_BACKOFF_MAX="1") as s:
        assert "IMAGEGROUPS_MAX_ATTEMPTS" not in s.env()
        s.start_worker("--concurrency", "2")
        job = new_job()
        early = outbox.stage_finished(job, "build-image", "succeeded")
        outbox.send(s.client, early)
        wait_for(lambda: deliveries(s, early["event_id"]) >= 5, timeout=30, what="a fifth delivery")
        outbox.send(s.client, outbox.catalog_parsed(job, "late-eight", ["compute"]))
        wait_status(s, "late-eight", "DEPLOYING")
        assert outcome(s, early["event_id"]) == "applied"
        assert letters(s) == []


def test_a_result_whose_catalog_never_comes_is_dead_lettered_after_the_default_eight(
    tmp_path: Path,
) -> None:
    with stack(tmp_path, "never8") as s:
        worker = s.start_worker("--concurrency", "2")
        early = outbox.stage_finished(new_job(), "build-image", "succeeded")
        outbox.send(s.client, early)
        start_group(s, "beside-never8", new_job())
        [letter] = wait_for(lambda: letters(s), timeout=30, what="the dead letter")
        assert (letter.event_id, letter.error_type, letter.attempts) == (
            early["event_id"],
            "CatalogNotParsedError",
            8,
        )
        assert letter.first_failed_at < letter.last_failed_at, "first failure kept, not the last"
        assert deliveries(s, early["event_id"]) == 8
        # Seven "retrying" lines and one "dead-lettered" line: no delivery went unlogged.
        assert worker.output().count(f"event_id={early['event_id']} task_id=") == 8
        wait_status(s, "beside-never8", "DEPLOYING")  # the worker went on beside it
        wait_for(lambda: broker_is_drained(s), timeout=10, what="an empty queue")


# 2 and 3. Malformed protocol messages ----------------------------------------------------


def _event(marker: str) -> dict[str, object]:
    """An event that would be applied at once if it came well-formed (a new job's catalog),
    so a refusal cannot be mistaken for a later failure; its id is the marker."""
    group_id = f"bent-{marker[:8]}"
    return outbox.catalog_parsed(new_job(), group_id, ["compute"], event_id=marker)


def _message(marker: str, case: str) -> dict[str, object]:
    event = _event(marker)
    headers = task_headers(CATALOG, marker)
    if case == "no id header":
        del headers["id"]
        return envelope(task_body(event), headers)
    if case == "protocol 1, unknown task, no headers, no id":
        body = {"task": f"no.such.task.{marker}", "args": [], "kwargs": {}}
        return envelope(json.dumps(body).encode(), {})
    if case == "protocol 1, unknown task, no headers":
        body = {"task": "no.such.task", "id": marker, "args": [], "kwargs": {}}
        return envelope(json.dumps(body).encode(), {})
    if case == "headers are a list":
        return envelope(task_body(event), [CATALOG, marker])
    if case == "kwargs is a list":
        return envelope(task_body(event, kwargs=[marker]), headers)
    if case == "embed is a string":
        return envelope(task_body(event, embed=f"embed-{marker}"), headers)
    if case == "retries is a string":
        return envelope(task_body(event), {**headers, "retries": "1"})
    if case == "retries is null":
        return envelope(task_body(event), {**headers, "retries": None})
    if case == "extra keyword self":
        return envelope(task_body(event, kwargs={"event": event, "self": marker}), headers)
    if case == "a callback to another task":
        link = {"task": "pipeline.deploy", "args": [marker], "kwargs": {}, "options": {}}
        linked: dict[str, object] = {"callbacks": [link], "errbacks": None, "chain": None}
        return envelope(task_body(event, embed=linked), headers)
    if case == "embed sets is_eager":
        embed: dict[str, object] = {"callbacks": None, "chain": None, "is_eager": True}
        return envelope(task_body(event, embed=embed), headers)
    if case == "eta is not a timestamp":
        # One far in the future is only dropped (tests/faults/test_headers_and_clocks.py).
        return envelope(task_body(event), {**headers, "eta": "not a time"})
    if case == "id is a number":
        return envelope(task_body(event), {**headers, "id": 5, "argsrepr": marker})
    if case == "an envelope with a null body":
        entry = envelope(task_body(event), headers)
        entry["body"] = None
        return entry
    if case == "a celery built-in task":
        return envelope(task_body(event), {**headers, "task": "celery.backend_cleanup"})
    raise AssertionError(case)


#: Each bent message, and what its dead letter must say.
MALFORMED = {
    "no id header": "header 'id'",
    "protocol 1, unknown task, no headers, no id": "protocol 1",
    # Celery itself coped with this one; kept as a guard beside the one above.
    "protocol 1, unknown task, no headers": "protocol 1",
    "headers are a list": "headers are list",
    "kwargs is a list": "kwargs must be an object",
    "embed is a string": "embed must be an object",
    "retries is a string": "header 'retries'",
    "retries is null": "header 'retries'",
    "extra keyword self": "'self'",
    "a callback to another task": "workflow links are not accepted",
    "embed sets is_eager": "embed has keys Celery does not define",
    "eta is not a timestamp": "header 'eta'",
    "id is a number": "header 'id'",
    "a celery built-in task": "unknown task",
    # Found by the soak: storing it failed on the missing body, so it was requeued for ever.
    "an envelope with a null body": "got NoneType",
}


@pytest.mark.parametrize(("case", "reason"), MALFORMED.items(), ids=list(MALFORMED))
def test_a_malformed_task_message_is_dead_lettered_once_and_the_worker_keeps_consuming(
    shared_worker: Stack, case: str, reason: str
) -> None:
    s = shared_worker
    [worker] = s.processes
    marker = str(uuid.uuid4())
    push(s.redis, _message(marker, case))
    [letter] = wait_for(lambda: letters_for(s, marker), timeout=20, what=f"a dead letter ({case})")
    assert letter.attempts == 1, "refused on arrival, not after retries"
    assert reason in letter.error_message, letter.error_message
    still_consuming(s, worker)
    wait_for(lambda: broker_is_drained(s), timeout=10, what="an empty queue")
    assert len(letters_for(s, marker)) == 1
    assert outcome(s, marker) is None, "a dead-lettered event must not also be applied"
    sent = [str(m) for m in s.redis.lrange("pipeline.deploy", 0, -1)]
    assert not [m for m in sent if marker in m], "nothing is sent on a bad message's behalf"


def test_an_event_whose_expires_header_has_passed_is_applied_not_silently_dropped(
    shared_worker: Stack,
) -> None:
    s = shared_worker
    job = new_job()
    event = outbox.catalog_parsed(job, f"expired-{job[:8]}", ["compute"])
    send_event(s.redis, CATALOG, event, expires="2000-01-01T00:00:00+00:00")
    wait_for(lambda: outcome(s, str(event["event_id"])), timeout=20, what="the event's outcome")
    assert outcome(s, str(event["event_id"])) == "applied"


@pytest.mark.parametrize("timelimit", ["abc", "ab", [0.001, 0.001], {"soft": 1}])
def test_a_per_message_time_limit_of_any_shape_is_ignored(
    shared_worker: Stack, timelimit: object
) -> None:
    s = shared_worker
    event = _event(str(uuid.uuid4()))
    send_event(s.redis, CATALOG, event, timelimit=timelimit)
    wait_for(lambda: outcome(s, str(event["event_id"])), timeout=20, what="the event's outcome")
    assert outcome(s, str(event["event_id"])) == "applied"


# 4. Time limits ---------------------------------------------------------------------------


def _hold_group_lock_then(s: Stack, group_id: str, publish: object, waited: float) -> None:
    """Hold the group's row lock until the worker's handler has waited `waited` seconds on it."""
    with s.engine.connect() as blocker:
        blocker.execute(select(ImageGroupRow).where(ImageGroupRow.id == group_id).with_for_update())
        assert callable(publish)
        publish()
        wait_for(
            lambda: lock_wait_seconds(s.engine) >= waited,
            timeout=30,
            what=f"the handler to wait {waited}s on the row lock",
        )
        blocker.rollback()


def test_a_per_message_time_limit_cannot_ack_an_event_away(tmp_path: Path) -> None:
    with stack(tmp_path, "timelimit", IMAGEGROUPS_LOCK_TIMEOUT_MS="60000") as s:
        s.start_worker("--concurrency", "1")
        job = new_job()
        start_group(s, "limited", job)
        wait_status(s, "limited", "DEPLOYING")
        deployed = outbox.stage_finished(job, "deploy", "succeeded")
        _hold_group_lock_then(
            s,
            "limited",
            lambda: send_event(s.redis, STAGE, deployed, timelimit=[0.5, 1]),
            waited=2.0,
        )
        wait_status(s, "limited", "RESTARTING")
        assert moves(s, "limited").count(("DEPLOYING", "DEPLOYED")) == 1


def test_a_handler_killed_by_the_workers_time_limit_comes_back_and_applies_once(
    tmp_path: Path,
) -> None:
    settings = {"IMAGEGROUPS_LOCK_TIMEOUT_MS": "60000", "IMAGEGROUPS_TASK_TIME_LIMIT": "2"}
    with stack(tmp_path, "killed", **settings) as s:
        worker = s.start_worker("--concurrency", "1")
        job = new_job()
        start_group(s, "killed", job)
        wait_status(s, "killed", "DEPLOYING")
        deployed = outbox.stage_finished(job, "deploy", "succeeded")

        def kill_observed() -> bool:
            return "Hard time limit" in worker.output()

        def came_back() -> bool:
            return deliveries(s, deployed["event_id"]) >= 2

        with s.engine.connect() as blocker:
            blocker.execute(
                select(ImageGroupRow).where(ImageGroupRow.id == "killed").with_for_update()
            )
            outbox.send(s.client, deployed)
            wait_for(kill_observed, timeout=30, what="the hard time limit to kill the handler")
            # Celery logs the limit just before it kills the process: the lock is let go only
            # once the event is back and counted, so the killed handler cannot be the one
            # that gets it (it would commit, and the redelivery be a duplicate).
            wait_for(came_back, timeout=30, what="the killed handler's event to come back")
            blocker.rollback()
        wait_status(s, "killed", "RESTARTING")
        assert moves(s, "killed").count(("DEPLOYING", "DEPLOYED")) == 1
        assert deliveries(s, deployed["event_id"]) >= 2  # killed once, then applied
        wait_for(
            lambda: "outcome=applied status=RESTARTING" in worker.output(),
            timeout=10,
            what="the redelivery's log line",
        )
        assert letters(s) == []


# 5. Dead letters while the database is down -------------------------------------------------


def _allow_connections(url: str, allow: bool) -> None:
    """Refuse new connections to the test's database and end its sessions, or allow them."""
    target = make_url(url)
    admin = create_engine(
        target.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    name = target.database
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allow).lower()}'))
        if not allow:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
    admin.dispose()


def test_undecodable_messages_during_a_database_outage_do_not_hold_up_later_events(
    tmp_path: Path,
) -> None:
    with stack(tmp_path, "dlstall") as s:
        worker = s.start_worker("--concurrency", "2")
        markers = [str(uuid.uuid4()) for _ in range(12)]  # more than the 8 prefetch slots
        _allow_connections(s.database_url, False)
        s.engine.dispose()
        for marker in markers:
            push(s.redis, envelope(f"not json {marker}".encode(), task_headers(STAGE, marker)))
        # Within ~3 s its probe sees the outage and it stops consuming
        # (workers/edge/task.py).
        wait_for(
            lambda: worker.output().count("could not dead-letter") >= 1,
            timeout=30,
            what="the dead-letter store to fail",
        )
        _allow_connections(s.database_url, True)
        still_consuming(s, worker, timeout=60)
        for marker in markers:
            wait_for(lambda: letters_for(s, marker), timeout=60, what="every dead letter")  # noqa: B023
        assert sorted(len(letters_for(s, m)) for m in markers) == [1] * len(markers)
        wait_for(lambda: broker_is_drained(s), timeout=20, what="an empty queue")


# 6. NUL characters ---------------------------------------------------------------------------


def test_a_deploy_failure_with_nul_characters_fails_its_group(shared_worker: Stack) -> None:
    s = shared_worker
    job, group_id = new_job(), f"nul-{uuid.uuid4().hex[:8]}"
    catalog = outbox.catalog_parsed(
        job, group_id, ["compute"], catalog_name="cat\x00name", catalog_version="1\x00"
    )
    outbox.send(s.client, catalog)
    outbox.send(s.client, outbox.stage_finished(job, "build-image", "succeeded"))
    wait_status(s, group_id, "DEPLOYING")
    failed = outbox.stage_finished(
        job,
        "deploy",
        "failed",
        error_code="E\x00",
        error_summary="disk\x00full",
        detail={"log": "a\x00b", "k\x00": ["\x00"]},
    )
    outbox.send(s.client, failed)
    wait_status(s, group_id, "FAILED")
    with s.engine.connect() as conn:
        row = conn.execute(
            select(StageRow).where(StageRow.job_id == job, StageRow.stage == "deploy")
        ).one()
    assert (row.error_code, row.error_summary) == ("E\\x00", "disk\\x00full")
    assert row.result_detail == {"log": "a\\x00b", "k\\x00": ["\\x00"]}
    group = s.group(group_id)
    assert group is not None and group.status is ImageGroupStatus.FAILED


def test_an_image_name_with_a_nul_character_is_refused_with_a_clear_reason(
    shared_worker: Stack,
) -> None:
    s = shared_worker
    job, group_id = new_job(), f"nulimg-{uuid.uuid4().hex[:8]}"
    catalog = outbox.catalog_parsed(job, group_id, ["compute"], {"compute": "img\x00.iso"})
    outbox.send(s.client, catalog)
    [letter] = wait_for(
        lambda: letters_for(s, str(catalog["event_id"])), timeout=20, what="the refusal"
    )
    assert letter.error_type == "InvalidEventError"
    assert "role_images" in letter.error_message and "control" in letter.error_message
