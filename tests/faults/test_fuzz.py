"""Fuzzing a real worker: bent raw messages among a normal flow; each ends in one outcome."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.faults.checks import RECONNECT, wait_outcomes
from tests.faults.invariants import assert_invariants, plan, publish
from tests.faults.messages import push
from tests.faults.mutations import catalog_event, fuzz
from tests.faults.scenario import QUICK, answering
from tests.integration.stack import stack

pytestmark = pytest.mark.faults

SEED = 20261126


def test_every_fuzzed_message_ends_applied_or_dead_lettered_exactly_once(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    with stack(tmp_path, "fuzz", **QUICK) as s:
        worker = s.start_worker("--concurrency", "2")
        plans = plan(10, "fuzzflow", fail_rate=0.3, seed=SEED)
        batch = [fuzz(rng, catalog_event) for _ in range(200)]
        with answering(s, plans) as pipeline:
            events: list[str] = []
            for index, fuzzed in enumerate(batch):
                push(s.redis, fuzzed.raw)
                if index % 20 == 0:
                    events += publish(s, plans[index // 20])
            # Each message is handled (an inbox row under its marker) or dead-lettered (its
            # marker in exactly one dead letter); which one depends on how it was bent.
            handled = wait_outcomes(s, [f.marker for f in batch], timeout=120)
            refused = [f.marker for f in batch if f.marker not in handled]
            assert_invariants(s, plans, pipeline, events=[*events, *handled], invalid=refused)
        assert RECONNECT not in worker.output()
        kinds = {f.how.split(" ")[0] for f in batch}
        assert {"valid", "header", "body", "envelope"} <= kinds
        assert 0 < len(refused) < len(batch), "the batch must hold both kinds"
