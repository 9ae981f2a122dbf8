"""The soak: many groups through every stage while faults of every kind land, then the invariants.

The short form runs with every test run; the long one is behind the `soak` marker:

    scripts/test.sh tests/faults/test_soak.py -m soak
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from tests.faults.chaos import killing_children
from tests.faults.checks import wait_outcomes
from tests.faults.invariants import Planned, assert_invariants, describe_unsettled, plan, publish
from tests.faults.messages import push
from tests.faults.mutations import catalog_event, fuzz
from tests.faults.scenario import QUICK, answering, progressed
from tests.integration.stack import Process, Stack, stack, wait_for

pytestmark = pytest.mark.faults

SEED = 7
#: pytest's limit per form. Alone the short form takes under a minute; on a loaded machine
#: many times that. Every wait inside shares one deadline that ends MARGIN before pytest's,
#: so a run that does not settle fails naming the groups, not with pytest's stack dump.
SHORT_LIMIT, LONG_LIMIT = 900, 1800
MARGIN = 90.0
#: What assert_invariants may spend after the groups settle (its follow-on and drain waits).
AFTER_SETTLING = 120.0


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def left(self, keep: float = 0.0) -> float:
        return max(1.0, self.at - time.monotonic() - keep)


def _until(
    s: Stack, plans: Sequence[Planned], ready: Callable[[], bool], what: str, deadline: Deadline
) -> None:
    try:
        wait_for(ready, timeout=deadline.left(), what=what, every=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {describe_unsettled(s, plans)}") from None


def _worker(s: Stack, name: str) -> Process:
    return s.start_worker("--concurrency", "2", "-n", f"{name}@%h", name=name)


@pytest.mark.parametrize(
    ("groups", "limit"),
    [
        pytest.param(150, SHORT_LIMIT, id="short", marks=pytest.mark.timeout(SHORT_LIMIT)),
        pytest.param(
            3000, LONG_LIMIT, id="long", marks=[pytest.mark.soak, pytest.mark.timeout(LONG_LIMIT)]
        ),
    ],
)
def test_groups_through_every_stage_under_random_faults_keep_every_invariant(
    tmp_path: Path, groups: int, limit: float
) -> None:
    rng = random.Random(SEED)
    deadline = Deadline(limit - MARGIN)
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
                        _until(s, plans, lambda: progressed(s, groups // 4), "progress", deadline)
                        workers[0].kill_all()
                        workers.append(_worker(s, "soak-replacement"))
                most = groups * 3 // 4
                _until(s, plans, lambda: progressed(s, most), "most groups", deadline)
            # The faults stop; the pipeline keeps answering until everything has settled.
            markers = [f.marker for f in fuzzed]
            handled = wait_outcomes(s, markers, timeout=deadline.left(keep=AFTER_SETTLING))
            refused = [f.marker for f in fuzzed if f.marker not in handled]
            settle = deadline.left(keep=AFTER_SETTLING)
            assert_invariants(
                s, plans, pipeline, events=[*events, *handled], invalid=refused, timeout=settle
            )
        elapsed = time.monotonic() - started
        print(f"\nsoak: {groups} groups, {len(events)} events, {len(fuzzed)} fuzzed, "
              f"{killer.kills} pool processes killed, 1 worker killed, {elapsed:.0f}s")  # fmt: skip
        assert killer.kills >= 5
