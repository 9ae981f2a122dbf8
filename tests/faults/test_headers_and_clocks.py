"""Headers a publisher sets and clocks that disagree: neither steers the worker nor wedges an
event. Each test failed before its fix (issue 14, defects 3 and 4), but the replay lineage
guard, which keeps replay_of working now that it comes from the store instead of a header."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain import DeadLetter, DeadLetterStatus
from tests.faults.checks import broker_is_drained, letters_for, outcome, still_consuming
from tests.faults.messages import envelope, push, send_event, task_body, task_headers
from tests.integration.flow import new_job
from tests.integration.stack import Process, Stack, stack, wait_for
from tests.integration.test_dead_letter_store import refusing_dead_letters
from workers import outbox

pytestmark = pytest.mark.faults

STAGE = "imagegroups.stage_finished"
CATALOG = "imagegroups.catalog_parsed"
REPLAY_HEADER = "imagegroups_replay_of"
LINKED = {
    "callbacks": [{"task": "pipeline.deploy", "args": [], "kwargs": {}, "options": {}}],
    "errbacks": None,
    "chain": None,
    "chord": None,
}


@pytest.fixture(scope="module")
def s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One worker with a 2 s retry cap (so the eta bound is 302 s now, and was twice the cap,
    4 s, before its fix) and two attempts an event, so a replay that keeps failing is
    dead-lettered again in about a second."""
    settings = {
        "IMAGEGROUPS_RETRY_BACKOFF_MAX": "2",
        "IMAGEGROUPS_RETRY_BACKOFF_BASE": "1",
        "IMAGEGROUPS_MAX_ATTEMPTS": "2",
    }
    with stack(tmp_path_factory.mktemp("headers"), "headers", **settings) as running:
        running.start_worker("--concurrency", "2")
        yield running


def _worker(s: Stack) -> Process:
    [worker] = s.processes
    return worker


def _invalid_event() -> dict[str, object]:
    """A stage result refused at once (InvalidEventError): its outcome is not one we know."""
    return outbox.stage_finished(new_job(), "deploy", "maybe")


def _applicable_event() -> dict[str, object]:
    """A new job's catalog: applied as soon as it is handled."""
    job = new_job()
    return outbox.catalog_parsed(job, f"clock-{job[:8]}", ["compute"])


def _one_letter(s: Stack, marker: str) -> DeadLetter:
    [letter] = wait_for(lambda: letters_for(s, marker), timeout=20, what="the dead letter")
    wait_for(lambda: broker_is_drained(s), timeout=10, what="an empty queue: no retry loops")
    assert len(letters_for(s, marker)) == 1
    return letter


# Defect 3: a forged replay header --------------------------------------------------------------


@pytest.mark.parametrize("forged", [987654321, True, -5, "another event's letter"])
def test_a_forged_replay_header_ends_in_exactly_one_dead_letter_without_lineage(
    s: Stack, forged: object
) -> None:
    if forged == "another event's letter":  # an id that exists: it must not be trusted either
        other = _invalid_event()
        send_event(s.redis, STAGE, other)
        forged = _one_letter(s, str(other["event_id"])).id
    event = _invalid_event()
    marker = str(event["event_id"])
    forged_header: dict[str, Any] = {REPLAY_HEADER: forged}
    send_event(s.redis, STAGE, event, **forged_header)
    letter = _one_letter(s, marker)
    assert (letter.event_id, letter.error_type, letter.attempts) == (
        marker,
        "InvalidEventError",
        1,
    )
    assert letter.replay_of is None
    assert f"could not dead-letter event_id={marker}" not in _worker(s).output()


def test_a_replayed_letter_that_fails_again_records_replay_of_from_the_store(s: Stack) -> None:
    early = outbox.stage_finished(new_job(), "build-image", "succeeded")  # no catalog, ever
    marker = str(early["event_id"])
    outbox.send(s.client, early)
    first = _one_letter(s, marker)
    assert (first.error_type, first.attempts, first.replay_of) == ("CatalogNotParsedError", 2, None)
    chain = [first]
    for _ in range(2):
        s.run_cli("dead-letters", "replay", str(chain[-1].id))
        seen = {d.id for d in chain}
        [again] = wait_for(
            lambda: [d for d in letters_for(s, marker) if d.id not in seen],  # noqa: B023
            timeout=20,
            what="the replay to be dead-lettered again",
        )
        assert again.replay_of == chain[-1].id, "lineage: the letter replayed last"
        chain.append(again)
    statuses = [d.status for d in sorted(letters_for(s, marker), key=lambda d: d.id or 0)]
    assert statuses == [DeadLetterStatus.REPLAYED, DeadLetterStatus.REPLAYED, DeadLetterStatus.DEAD]


@pytest.mark.parametrize("path", ["the task", "the protocol check"])
def test_a_message_no_dead_letter_of_which_stores_is_given_up_once_and_the_worker_goes_on(
    s: Stack, path: str
) -> None:
    event = _invalid_event()
    marker = str(event["event_id"])
    with refusing_dead_letters(s.engine, "true", "check_violation"):
        if path == "the task":
            send_event(s.redis, STAGE, event)
        else:
            push(s.redis, envelope(task_body(event, embed=LINKED), task_headers(STAGE, marker)))
        wait_for(
            lambda: (
                f"event_id={marker} task=imagegroups.stage_finished: no dead letter of it"
                in _worker(s).output()
            ),
            timeout=20,
            what="the CRITICAL line that gives the message up",
        )
        wait_for(lambda: broker_is_drained(s), timeout=10, what="the message to end")
    assert letters_for(s, marker) == []
    still_consuming(s, _worker(s))


# Defect 4: clocks that disagree, and the event_id of a refused message -----------------------


def _scheduled_ids(s: Stack) -> set[str]:
    """The task ids the worker holds for a later eta (`inspect scheduled`, a read the control
    policy answers)."""
    replies = s.client.control.inspect(timeout=3, limit=1).scheduled() or {}
    return {entry["request"]["id"] for held in replies.values() for entry in held}


def test_a_retry_whose_eta_is_past_the_backoff_cap_by_clock_skew_is_held_then_applied(
    s: Stack,
) -> None:
    # The eta arithmetic for a host 90 s fast (45 s countdown + 90 s skew, within the 60 s cap
    # plus 300 s) is unit-tested (tests/unit/test_protocol_headers.py). Here the real worker
    # must honour such an eta: with the fixture's 2 s cap, 8 s of skew puts the eta past the
    # old bound (twice the cap), which dead-lettered it, yet only 10 s of real time away.
    event = _applicable_event()
    marker = str(event["event_id"])
    eta = datetime.now(UTC) + timedelta(seconds=2 + 8)
    send_event(s.redis, CATALOG, event, retries=1, eta=eta.isoformat())
    wait_for(
        lambda: marker in _scheduled_ids(s),
        timeout=7,
        what="the worker to take the retry and hold it until its eta",
    )
    assert letters_for(s, marker) == []
    assert outcome(s, marker) is None, "held, not run before its eta"
    wait_for(lambda: outcome(s, marker), timeout=10 + 20, what="the retry to be applied")
    assert outcome(s, marker) == "applied"
    assert letters_for(s, marker) == []
    assert datetime.now(UTC) >= eta - timedelta(seconds=1), "the eta was kept, not dropped"


def test_an_eta_far_beyond_any_honest_skew_is_dropped_and_the_event_applied_now(
    s: Stack,
) -> None:
    event = _applicable_event()
    marker = str(event["event_id"])
    send_event(s.redis, CATALOG, event, eta="2999-01-01T00:00:00+00:00")
    wait_for(lambda: outcome(s, marker), timeout=20, what="the event's outcome")
    assert outcome(s, marker) == "applied"
    assert letters_for(s, marker) == []
    lines = [line for line in _worker(s).output().splitlines() if f"event_id={marker}" in line]
    assert any("WARNING" in line and "runs now" in line for line in lines), lines


@pytest.mark.parametrize("case", ["workflow links in embed", "retries is text", "eta is no time"])
def test_a_message_refused_at_the_protocol_layer_keeps_its_envelopes_event_id(
    s: Stack, case: str
) -> None:
    event = _applicable_event()
    marker = str(event["event_id"])
    headers = task_headers(CATALOG, str(uuid.uuid4()))  # a task id that is not the event_id
    body = task_body(event, embed=LINKED if case == "workflow links in embed" else None)
    if case == "retries is text":
        headers["retries"] = "1"
    if case == "eta is no time":
        headers["eta"] = "tomorrow"
    push(s.redis, envelope(body, headers))
    letter = _one_letter(s, marker)
    assert letter.event_id == marker
    assert letter.attempts == 1 and outcome(s, marker) is None
