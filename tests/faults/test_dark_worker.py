"""One worker's path to PostgreSQL black-holes (bytes stop, sockets stay open): it takes no
events and gives back the ones it holds, so the healthy worker does the work, and it takes
events again once its database answers. Ends with the shared invariants."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import psycopg
import pytest

from persistence.db import Probe
from tests.faults.invariants import Planned, assert_invariants, plan, publish, wait_settled
from tests.faults.proxy import proxy_to
from tests.faults.scenario import QUICK, answering
from tests.integration.stack import HEALTH_COMMAND, Process, Stack, stack, wait_for
from tests.pg import fresh_database

pytestmark = pytest.mark.faults

PAUSED = "this worker takes no events"
RESUMED = "the database answers again"
#: The default time limit: a handler stuck on the dark database would hold its event a minute.
SETTINGS = QUICK | {"IMAGEGROUPS_TASK_TIME_LIMIT": "60"}


def _run(s: Stack, plans: list[Planned], events: list[str], timeout: float = 180) -> float:
    started = time.monotonic()
    for planned in plans:
        events += publish(s, planned)
    wait_settled(s, plans, timeout)
    return time.monotonic() - started


def _health_of(s: Stack, name: str) -> dict[str, object]:
    document = json.loads(s.run(HEALTH_COMMAND, check=False).stdout)
    [worker] = [w for w in document["workers"] if w["name"].startswith(name)]
    return dict(worker)


def _start(s: Stack, name: str, **env: str) -> Process:
    return s.start_worker("--concurrency", "2", "-n", f"{name}@%h", name=name, **env)


def test_a_worker_cut_off_from_its_database_leaves_its_events_to_a_healthy_one(
    tmp_path: Path,
) -> None:
    alone, warm, dark, healed = (
        plan(30, "alone", fail_rate=0.2, seed=7),
        plan(6, "warm", seed=8),
        plan(30, "dark", fail_rate=0.2, seed=9),
        plan(6, "healed", seed=10),
    )
    events: list[str] = []
    with (
        stack(tmp_path, "darkworker", **SETTINGS) as s,
        proxy_to(s.database_url) as proxy,
        answering(s, alone + warm + dark + healed) as pipeline,
    ):
        healthy = _start(s, "healthy")
        baseline = _run(s, alone, events)  # what the healthy worker needs on its own
        cut_off = _start(s, "dark", DATABASE_URL=proxy.url_for(s.database_url))
        _run(s, warm, events)  # both work; the dark one's pool holds open connections
        proxy.black_hole()
        with_dark = _run(s, dark, events)
        wait_for(lambda: PAUSED in cut_off.output(), timeout=10, what="the pause")
        report = _health_of(s, "dark@")
        assert report["taking_events"] is False, report
        proxy.heal()
        wait_for(lambda: RESUMED in cut_off.output(), timeout=10, what="the resume")
        healthy.stop()
        _run(s, healed, events, timeout=60)  # the worker that was cut off, on its own
        assert_invariants(s, alone + warm + dark + healed, pipeline, events=events)
        print(f"\nhealthy alone {baseline:.1f}s; beside a dark worker {with_dark:.1f}s")
        print(next(line for line in cut_off.output().splitlines() if PAUSED in line))
        assert with_dark <= 1.5 * baseline + 10, (baseline, with_dark)


def _gives_up_in_time(probe: Probe) -> float:
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        probe.check()
    return time.monotonic() - started


def test_the_probe_gives_up_on_a_database_that_goes_silent_within_its_deadline() -> None:
    with fresh_database("probe") as url, proxy_to(url) as proxy:
        probe = Probe(proxy.url_for(url), timeout=2)
        probe.check()  # its connection is open
        proxy.black_hole()
        on_open_connection = _gives_up_in_time(probe)
        on_new_connection = _gives_up_in_time(probe)
        proxy.heal()
        wait_for(lambda: _answers(probe), timeout=10, what="the probe to succeed again")
        probe.close()
    assert on_open_connection < 3 and on_new_connection < 3


def test_the_probe_gives_up_on_a_server_that_accepts_and_never_speaks() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        probe = Probe(
            f"postgresql+psycopg://postgres@127.0.0.1:{silent.getsockname()[1]}/x", timeout=2
        )
        assert _gives_up_in_time(probe) < 3


def _answers(probe: Probe) -> bool:
    try:
        probe.check()
    except psycopg.OperationalError:
        return False
    return True
