"""The worker's /metrics on a real worker (two pool processes): the counts a flow implies."""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
import urllib.request
from collections import defaultdict
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.flow import new_job, start_group, wait_status
from tests.integration.stack import WORKER_COMMAND, Process, Stack, stack, wait_for
from workers import outbox
from workers.messages import CATALOG_PARSED, STAGE_FINISHED
from workers.runtime.metrics_http import IDLE_TIMEOUT, MAX_HANDLERS, MAX_WAITING, BoundedHTTPServer
from workers.runtime.root import metrics_directory

pytestmark = pytest.mark.integration

ALERTS = Path(__file__).resolve().parents[2] / "docs" / "alerts.yml"
Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
        body = page.read().decode()
    samples: Samples = defaultdict(dict)
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name].get(tuple(sorted(labels.items())), 0.0)


def events_total(samples: Samples) -> float:
    return sum(samples["imagegroups_events_total"].values())


def run_flow(s: Stack) -> None:
    """One group PASSED, one FAILED, a duplicate, a stale result, two kinds of dead letter."""
    passed, failed = new_job(), new_job()
    start_group(s, "m-passed", passed)
    start_group(s, "m-failed", failed)
    wait_status(s, "m-passed", "DEPLOYING")
    wait_status(s, "m-failed", "DEPLOYING")
    for stage, status in (("deploy", "RESTARTING"), ("pxe-boot", "VALIDATING")):
        outbox.send(s.client, outbox.stage_finished(passed, stage, "succeeded"))
        wait_status(s, "m-passed", status)
    outbox.send(s.client, outbox.stage_finished(passed, "validate", "succeeded"))
    failure = outbox.stage_finished(failed, "deploy", "failed")
    outbox.send(s.client, failure)
    wait_status(s, "m-failed", "FAILED")
    outbox.send(s.client, failure)  # the same event again: duplicate
    outbox.send(s.client, outbox.stage_finished(failed, "deploy", "succeeded"))  # stale
    broken = outbox.stage_finished(failed, "deploy", "succeeded")
    del broken["payload"]["outcome"]
    outbox.send(s.client, broken)  # InvalidEventError, dead-lettered by the task
    s.client.send_task("imagegroups.no_such_task", kwargs={}, queue="imagegroups.events")
    wait_status(s, "m-passed", "PASSED")


EXPECTED_EVENTS = {
    (CATALOG_PARSED.task, "applied"): 2,
    (STAGE_FINISHED.task, "applied"): 6,  # 2 builds, 3 stages of m-passed, 1 deploy failure
    (STAGE_FINISHED.task, "duplicate"): 1,
    (STAGE_FINISHED.task, "stale"): 1,
    (STAGE_FINISHED.task, "dead-lettered"): 1,
}


def test_a_scrape_after_a_small_flow_finds_the_counts_the_flow_implies(tmp_path: Path) -> None:
    port = free_port()
    with stack(tmp_path, "metrics", IMAGEGROUPS_METRICS_PORT=str(port)) as s:
        worker = s.start_worker("--concurrency", "2")
        run_flow(s)
        wanted = sum(EXPECTED_EVENTS.values())
        wait_for(lambda: events_total(scrape(port)) >= wanted, timeout=30, what="every count")
        wait_for(
            lambda: sum(scrape(port)["imagegroups_dead_letters_total"].values()) >= 2,
            timeout=30,
            what="both dead letters to be counted",
        )
        started = time.perf_counter()
        seen = scrape(port)
        print(f"\nscrape took {1000 * (time.perf_counter() - started):.1f} ms")
        _assert_counts(seen)
        _assert_the_alert_rules_name_only_exported_metrics(seen)
        _kill_one_pool_process_and_check_its_files(worker, port, seen)


def _assert_counts(seen: Samples) -> None:
    events = {
        (dict(labels)["task"], dict(labels)["outcome"]): count
        for labels, count in seen["imagegroups_events_total"].items()
        if count
    }
    assert events == EXPECTED_EVENTS
    dead = {dict(k)["error_type"]: v for k, v in seen["imagegroups_dead_letters_total"].items()}
    assert dead == {"InvalidEventError": 1, "UnknownTaskError": 1}
    groups = {dict(k)["status"]: v for k, v in seen["imagegroups_groups"].items() if v}
    assert groups == {"PASSED": 1, "FAILED": 1}
    assert value(seen, "imagegroups_database_up") == 1
    assert value(seen, "imagegroups_groups_overdue") == 0
    assert value(seen, "imagegroups_event_handling_seconds_count", task=STAGE_FINISHED.task) == 8
    stages = {
        (dict(k)["stage"], dict(k)["outcome"]): v
        for k, v in seen["imagegroups_stage_duration_seconds_count"].items()
    }
    assert stages == {
        ("deploy", "succeeded"): 1,
        ("deploy", "failed"): 1,
        ("pxe-boot", "succeeded"): 1,
        ("validate", "succeeded"): 1,
    }
    assert sum(seen["imagegroups_events_in_progress"].values()) == 0


def _assert_the_alert_rules_name_only_exported_metrics(seen: Samples) -> None:
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    assert {r["alert"] for r in rules} >= {
        "DeadLettersRising",
        "OutboxBacklogOld",
        "GroupsOverdue",
        "NoEventsHandled",
    }
    named = {m for r in rules for m in re.findall(r"imagegroups_\w+", r["expr"])}
    assert named and named <= set(seen), named - set(seen)


def _kill_one_pool_process_and_check_its_files(worker: Process, port: int, before: Samples) -> None:
    directory = metrics_directory(port)
    # A pool process that handled events has live gauges (events in progress) on file.
    victim = next(p for p in worker.children() if (directory / f"gauge_livesum_{p}.db").exists())
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: victim not in worker.children() and len(worker.children()) == 2,
        timeout=30,
        what="the pool to replace the killed process",
    )
    after = scrape(port)
    assert not list(directory.glob(f"gauge_livesum_{victim}.db"))  # reaped: mark_process_dead
    assert list(directory.glob(f"counter_{victim}.db"))  # its counts are kept
    assert after["imagegroups_events_total"] == before["imagegroups_events_total"]


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setblocking(False)  # so that looking never waits
    return sock


def _closed_by_the_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False  # open, nothing to read
    except ConnectionResetError:
        return True


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_idle_connections_cost_bounded_threads_and_descriptors_and_are_closed(
    tmp_path: Path,
) -> None:
    port = free_port()
    with stack(tmp_path, "metricsidle", IMAGEGROUPS_METRICS_PORT=str(port)) as s:
        # 256 descriptors: 300 connections held open would exhaust them.
        argv = ["prlimit", "--nofile=256", "--", *WORKER_COMMAND]
        worker = s.spawn(argv, "worker")
        wait_for(lambda: "ready." in worker.output(), timeout=30, what="the worker")
        pid = worker.popen.pid
        scrape(port)
        threads, descriptors = _threads(pid), _descriptors(pid)

        idle = [_connect(port) for _ in range(300)]
        try:
            assert value(scrape(port), "imagegroups_database_up") == 1
            # A little slack for what the worker itself may open meanwhile (a connection).
            assert _threads(pid) <= threads + MAX_HANDLERS + 2
            assert _descriptors(pid) <= descriptors + MAX_WAITING + MAX_HANDLERS + 8
            # The oldest make room for the newest: all but the last few are closed already.
            wait_for(
                lambda: sum(map(_closed_by_the_server, idle)) >= len(idle) - MAX_WAITING,
                timeout=10,
                what="the oldest idle connections to be closed",
            )
        finally:
            for sock in idle:
                sock.close()
        _a_silent_and_a_stalled_client_are_closed_after_the_idle_timeout(port)
        assert "Too many open files" not in worker.output()
        assert value(scrape(port), "imagegroups_database_up") == 1


def _a_silent_and_a_stalled_client_are_closed_after_the_idle_timeout(port: int) -> None:
    silent, stalled = _connect(port), _connect(port)
    stalled.send(b"GET /metrics HTTP/1.0\r\n")  # and never the blank line
    opened = time.monotonic()
    with silent, stalled:
        wait_for(
            lambda: _closed_by_the_server(silent) and _closed_by_the_server(stalled),
            timeout=IDLE_TIMEOUT + 10,
            what="the idle timeout to close both",
        )
        assert time.monotonic() - opened >= IDLE_TIMEOUT - 0.5


def test_a_request_beyond_the_busy_handlers_is_closed_at_once_not_queued() -> None:
    release = threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            release.wait(10)
            self.send_response(204)
            self.end_headers()

    server = BoundedHTTPServer(
        ("127.0.0.1", 0), Slow, idle_timeout=5, max_waiting=4, max_handlers=1
    )
    serving = threading.Thread(target=server.serve, daemon=True)
    serving.start()
    port = server.server_address[1]
    try:
        busy, extra = _connect(port), _connect(port)
        busy.send(b"GET / HTTP/1.0\r\n\r\n")
        wait_for(
            lambda: any(t.name == "metrics-http-request" for t in threading.enumerate()),
            timeout=5,
            what="the one handler to be busy",
        )
        extra.send(b"GET / HTTP/1.0\r\n\r\n")
        wait_for(lambda: _closed_by_the_server(extra), timeout=2, what="the extra to be closed")
        assert extra.recv(64) == b""  # no answer at all
        release.set()
        busy.settimeout(5)
        assert busy.recv(64).startswith(b"HTTP/1.0 204")
    finally:
        release.set()
        server.stop()
    serving.join(timeout=5)
    assert not serving.is_alive()
