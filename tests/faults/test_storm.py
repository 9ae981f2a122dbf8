"""Four workers, every event delivered four or five times at once, pool processes killed."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.faults.chaos import killing_children
from tests.faults.invariants import assert_invariants, plan, publish
from tests.faults.scenario import QUICK, answering, progressed
from tests.integration.stack import stack, wait_for

pytestmark = pytest.mark.faults


def test_four_workers_each_event_four_or_five_times_children_killed_nothing_lost_or_doubled(
    tmp_path: Path,
) -> None:
    with stack(tmp_path, "storm", **QUICK) as s:
        workers = [
            s.start_worker("--concurrency", "2", "-n", f"storm{i}@%h", name=f"storm{i}")
            for i in range(4)
        ]
        plans = plan(40, "storm", fail_rate=0.25, seed=4)
        rng = random.Random(4)
        with answering(s, plans, copies=(4, 5)) as pipeline:
            with killing_children(workers, every=0.4, seed=4) as killer:
                events = [
                    event
                    for planned in plans
                    for event in publish(s, planned, copies=rng.randint(4, 5))
                ]
                wait_for(lambda: progressed(s, 30), timeout=120, what="most groups under way")
                wait_for(lambda: killer.kills >= 8, timeout=60, what="eight pool processes killed")
            assert_invariants(s, plans, pipeline, events=events, timeout=180)
        assert all(w.popen.poll() is None for w in workers), "a worker died"
