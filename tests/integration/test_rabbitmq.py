"""The worker on RabbitMQ (the contract's other broker): the same flow, the same guarantees."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.flow import HAPPY, follow_ons, moves, new_job, start_group
from tests.integration.stack import stack, wait_for

pytestmark = pytest.mark.integration


def test_groups_walk_to_passed_with_rabbitmq_as_the_broker(tmp_path: Path, vhost: str) -> None:
    with stack(tmp_path, "rabbit", broker=vhost) as s:
        s.start_worker()
        s.start_simulator()
        ids = [f"rabbit-{i}" for i in range(5)]
        for group_id in ids:
            start_group(s, group_id, new_job())

        def passed() -> bool:
            groups = [s.group(i) for i in ids]
            return all(g is not None and g.status == "PASSED" for g in groups)

        wait_for(passed, timeout=60, what="every group to pass on RabbitMQ")
        for group_id in ids:
            assert moves(s, group_id) == HAPPY
            assert len(follow_ons(s, group_id)) == 3
