"""Remote control from a plain publisher: no command stops a worker or ends an event unhandled.

Celery's remote control comes over the broker the events come over, and a publisher needs no
more than the broker's address to send it (a separate `Celery(broker=...)` app here). The
worker answers what `imagegroups health` and Flower's views ask, refuses the rest with a
reply, logs and counts it; an operator can opt in to the full set
(IMAGEGROUPS_REMOTE_CONTROL=full), and even then a revoke never drops an event.
"""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from flower.inspector import Inspector  # type: ignore[import-untyped]
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from persistence.models import DeadLetterRow, ImageGroupRow
from tests.faults.checks import lock_wait_seconds, outcome
from tests.faults.invariants import CATALOG, STAGE, Planned, assert_invariants, plan
from tests.faults.messages import EVENTS_QUEUE, send_event
from tests.faults.scenario import QUICK, answering, progressed
from tests.faults.servers import free_port
from tests.integration.flow import new_job, start_group, wait_status
from tests.integration.stack import Process, Stack, stack, wait_for
from workers import outbox

pytestmark = pytest.mark.faults

WORKER = "guarded@control"
#: Every command a publisher could use against the worker, with arguments that would do harm.
HARMFUL: dict[str, dict[str, Any]] = {
    "shutdown": {},
    "pool_shrink": {"n": 1},
    "pool_grow": {"n": 4},
    "pool_restart": {"reload": True},
    "autoscale": {"max": 1, "min": 0},
    "cancel_consumer": {"queue": EVENTS_QUEUE},
    "add_consumer": {"queue": "intruder"},
    "rate_limit": {"task_name": STAGE, "rate_limit": "1/h"},
    "time_limit": {"task_name": STAGE, "hard": 0.01},
    "disable_events": {},
    "terminate": {"task_id": str(uuid.uuid4()), "signal": "SIGKILL"},
    "revoke_by_stamped_headers": {"headers": {"stamp": "x"}, "terminate": True},
    "election": {"id": "e1", "topic": "task", "action": {"task": CATALOG, "kwargs": {}}},
    "heartbeat": {},
    "no_such_command": {},
}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Process, int]]:
    port = free_port()
    tmp = tmp_path_factory.mktemp("control")
    with stack(tmp, "control", **QUICK, IMAGEGROUPS_METRICS_PORT=str(port)) as s:
        worker = s.start_worker("--concurrency", "2", "-n", WORKER, name="guarded")
        yield s, worker, port


def publisher(s: Stack) -> Celery:
    """Anyone who can reach the broker: no settings of ours, only its address."""
    return Celery("publisher", broker=s.redis_url)


def by_worker(replies: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {name: answer for reply in replies or [] for name, answer in reply.items()}


def ask(app: Celery, command: str, **arguments: Any) -> dict[str, Any]:
    """A broadcast to every worker, as an attacker sends it; the stack runs one worker, so the
    wait ends at its reply (`limit`) instead of lasting the whole timeout."""
    replies = app.control.broadcast(command, arguments=arguments, reply=True, timeout=3, limit=1)
    return by_worker(replies)


def assert_refused(replies: dict[str, Any], command: str) -> None:
    answer = replies.get(WORKER)
    assert isinstance(answer, dict), f"{command}: no reply from the worker ({replies})"
    assert str(answer.get("error", "")).startswith("refused: "), (command, answer)


def events_of(planned: Planned) -> list[tuple[str, dict[str, Any]]]:
    """The catalog and build result of a group, built before they are published."""
    catalog = outbox.catalog_parsed(planned.job_id, planned.group_id, ["compute", "login"])
    built = outbox.stage_finished(planned.job_id, "build-image", "succeeded")
    return [(CATALOG, catalog), (STAGE, built)]


def send_all(s: Stack, events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [send_event(s.redis, task, event) for task, event in events]


def refusals(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
        body = page.read().decode()
    return {
        sample.labels["command"]: sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == "imagegroups_control_refused_total"
    }


def test_a_revoke_or_a_hello_sent_before_its_events_arrive_drops_none_of_them(
    guarded: tuple[Stack, Process, int],
) -> None:
    s, worker, _ = guarded
    plans = plan(8, "revoked", fail_rate=0.25, seed=14)
    attacker = publisher(s)
    with answering(s, plans) as pipeline:
        prepared = [pair for planned in plans for pair in events_of(planned)]
        ids = [str(event["event_id"]) for _, event in prepared]
        # A reply means the worker has handled the command before the events are sent.
        revoked = attacker.control.revoke(ids[:8], reply=True, timeout=3, limit=1)
        killed = attacker.control.revoke(
            ids[8:], terminate=True, signal="SIGKILL", reply=True, timeout=3, limit=1
        )
        hello = ask(attacker, "hello", from_node="intruder@elsewhere", revoked=ids)
        send_all(s, prepared)
        assert_invariants(s, plans, pipeline, events=ids)
    assert_refused(by_worker(revoked), "revoke")
    assert_refused(by_worker(killed), "revoke with terminate")
    assert_refused(hello, "hello")
    assert "Discarding revoked task" not in worker.output()


def test_no_command_of_a_publisher_stops_slows_or_blinds_a_worker_while_events_flow(
    guarded: tuple[Stack, Process, int],
) -> None:
    s, worker, port = guarded
    assert refusals(port).get("shutdown") == 0.0, "the series should exist before a refusal"
    plans = plan(16, "commanded", fail_rate=0.25, seed=15)
    attacker = publisher(s)
    with answering(s, plans) as pipeline:
        prepared = [pair for planned in plans for pair in events_of(planned)]
        ids = send_all(s, prepared[:16])
        wait_for(lambda: progressed(s, 2), timeout=30, what="the flow to be under way")
        answers = {command: ask(attacker, command, **args) for command, args in HARMFUL.items()}
        ids += send_all(s, prepared[16:])
        assert_invariants(s, plans, pipeline, events=ids)
    assert worker.popen.poll() is None, "the worker stopped"
    for command, replies in answers.items():
        assert_refused(replies, command)
    queues = publisher(s).control.inspect(timeout=3, limit=1).active_queues() or {}
    assert [q["name"] for q in queues[WORKER]] == [EVENTS_QUEUE]
    stats = publisher(s).control.inspect(timeout=3, limit=1).stats() or {}
    assert stats[WORKER]["pool"]["max-concurrency"] == 2
    counted = refusals(port)
    assert all(counted.get(c, 0) >= 1 for c in HARMFUL if c != "no_such_command"), counted
    assert counted.get("(unknown)", 0) >= 1, counted


def test_what_health_and_flower_ask_is_still_answered(guarded: tuple[Stack, Process, int]) -> None:
    s, _, _ = guarded
    inspect = publisher(s).control.inspect(timeout=3, destination=[WORKER])
    for method in ("ping", *Inspector.inspect_methods):
        replies = getattr(inspect, method)() or {}
        assert WORKER in replies, f"{method}: no reply"
        assert not (isinstance(replies[WORKER], dict) and "error" in replies[WORKER]), method
    health = ask(publisher(s), "imagegroups_health")[WORKER]
    assert health["database"]["ok"] and health["dead_letter_store"]["ok"], health
    # Flower switches task events on every few seconds: answered, and harmless.
    assert "error" not in ask(publisher(s), "enable_events")[WORKER]


def test_with_full_remote_control_an_operator_s_shutdown_is_honoured_but_no_revoke_drops_an_event(
    tmp_path: Path,
) -> None:
    with stack(tmp_path, "fullcontrol", IMAGEGROUPS_REMOTE_CONTROL="full") as s:
        worker = s.start_worker("--concurrency", "1", "-n", "operated@control", name="operated")
        operator = publisher(s)
        job = new_job()
        start_group(s, "operated", job)
        wait_status(s, "operated", "DEPLOYING")
        deployed = outbox.stage_finished(job, "deploy", "succeeded")
        event_id = str(deployed["event_id"])
        assert operator.control.revoke(event_id, reply=True, timeout=3, limit=1), "not answered"
        with s.engine.connect() as blocker:
            # The handler waits on the group's row lock while a terminating revoke comes in.
            blocker.execute(
                select(ImageGroupRow).where(ImageGroupRow.id == "operated").with_for_update()
            )
            send_event(s.redis, STAGE, deployed)
            wait_for(lambda: lock_wait_seconds(s.engine) > 0.2, timeout=20, what="a lock wait")
            operator.control.revoke(event_id, terminate=True, signal="SIGKILL", reply=True, limit=1)
            blocker.rollback()
        wait_status(s, "operated", "RESTARTING")
        assert outcome(s, event_id) == "applied"
        log = worker.output()
        assert "was revoked by remote control: ignored" in log
        assert "remote termination ignored" in log
        operator.control.broadcast("shutdown")
        assert worker.popen.wait(30) == 0, "the operator's shutdown was not honoured"


def test_a_broadcast_addressed_by_a_runaway_pattern_or_to_a_foreign_queue_is_dropped_unread(
    guarded: tuple[Stack, Process, int],
) -> None:
    s, worker, port = guarded
    letters_before = _letters(s)
    attacker = publisher(s)
    # kombu would run this regular expression against the worker's name: years of
    # backtracking in the consumer's loop, before any command is looked up.
    attacker.control.broadcast("ping", pattern="(?:.?){60}!", matcher="pcre", reply=False)
    # A reply address is not an argument of Celery's broadcast: a publisher writes the body.
    forged: dict[str, Any] = {"method": "ping", "arguments": {}, "destination": None}
    forged |= {"ticket": "t", "reply_to": {"exchange": "", "routing_key": EVENTS_QUEUE}}
    with attacker.connection_for_write() as conn:
        box = attacker.control.mailbox(conn)
        with conn.Producer() as producer:
            producer.publish(
                forged, exchange=box.exchange, serializer="json", declare=[box.exchange]
            )
    wait_for(lambda: refusals(port).get("(addressing)", 0) >= 2, timeout=15, what="the refusals")
    assert WORKER in ask(attacker, "ping"), "the consumer's loop no longer answers"
    start_group(s, "after-addressing", new_job())
    wait_status(s, "after-addressing", "DEPLOYING")
    assert _letters(s) == letters_before, "a reply went into the event queue, dead-lettered"
    assert worker.popen.poll() is None


def _letters(s: Stack) -> int:
    with s.engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(DeadLetterRow)) or 0
