"""The soak: many groups through every stage while faults of every kind land, then the invariants.

The short form runs with every test run; the long one is behind the `soak` marker:

    scripts/test.sh tests/faults/test_soak.py -m soak
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tests.faults.chaos import killing_children
from tests.faults.checks import wait_outcomes
from tests.faults.invariants import assert_invariants, plan, publish
from tests.faults.messages import push
from tests.faults.mutations import catalog_event, fuzz
from tests.faults.scenario import QUICK, answering, progressed
from tests.integration.stack import Process, Stack, stack, wait_for

pytestmark = pytest.mark.faults

SEED = 7


def _worker(s: Stack, name: str) -> Process:
    return s.start_worker("--concurrency", "2", "-n", f"{name}@%h", name=name)


@pytest.mark.parametrize(
    "groups", [pytest.param(150, id="short"), pytest.param(3000, id="long", marks=pytest.mark.soak)]
)
def test_groups_through_every_stage_under_random_faults_keep_every_invariant(
    tmp_path: Path, groups: int
) -> None:
    rng = random.Random(SEED)
    with stack(tmp_path, "soak", **QUICK) as s:
        workers = [_worker(s, f"soak{i}") for i in range(3)]
        plans = plan(groups, "soak", fail_rate=0.15, seed=SEED)
        fuzzed = []
        events: list[str] = []
        started = time.monotonic()
        with answering(s, plans, copies=(1, 3)) as pipeline:
            with killing_children(workers, every=0.5, seed=SEED) as killer:
                for index, planned in enumerate(plans):
                    events += publish(s, planned, copies=rng.randint(1, 2))
                    if rng.random() < 0.05:
                        fuzzed.append(fuzz(rng, catalog_event))
                        push(s.redis, fuzzed[-1].raw)
                    if index == groups // 2:
                        # A host dies: the whole worker, with whatever it had prefetched.
                        wait_for(lambda: progressed(s, groups // 4), timeout=300, what="progress")
                        workers[0].kill_all()
                        workers.append(_worker(s, "soak-replacement"))
                wait_for(lambda: progressed(s, groups * 3 // 4), timeout=600, what="most groups")
            # The faults stop; the pipeline keeps answering until everything has settled.
            handled = wait_outcomes(s, [f.marker for f in fuzzed], timeout=120)
            refused = [f.marker for f in fuzzed if f.marker not in handled]
            assert_invariants(
                s, plans, pipeline, events=[*events, *handled], invalid=refused, timeout=600
            )
        elapsed = time.monotonic() - started
        print(f"\nsoak: {groups} groups, {len(events)} events, {len(fuzzed)} fuzzed, "
              f"{killer.kills} pool processes killed, 1 worker killed, {elapsed:.0f}s")  # fmt: skip
        assert killer.kills >= 5
