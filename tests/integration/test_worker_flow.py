"""The worker end to end: real Redis broker, real PostgreSQL, real worker subprocesses."""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from domain import ImageGroupStatus
from tests.integration.flow import (
    HAPPY,
    follow_ons,
    moves,
    new_job,
    start_group,
    wait_status,
)
from tests.integration.stack import Stack, redis_messages, stack, wait_for
from workers import outbox

pytestmark = pytest.mark.integration

N_GROUPS = 20


def _all_terminal(s: Stack, ids: list[str]) -> bool:
    groups = [s.group(i) for i in ids]
    return all(g is not None and g.status.is_terminal() for g in groups)


def _assert_walked_happy_path_once(s: Stack, ids: list[str]) -> None:
    for group_id in ids:
        assert moves(s, group_id) == HAPPY, group_id
        tasks = Counter(m.task_name for m in follow_ons(s, group_id))
        assert tasks == {"pipeline.deploy": 1, "pipeline.pxe_boot": 1, "pipeline.validate": 1}


def test_twenty_groups_walk_from_catalog_to_passed_through_the_simulator(
    tmp_path: Path,
) -> None:
    with stack(tmp_path, "flow") as s:
        s.start_worker()  # exactly the docker-compose worker command
        s.start_simulator()
        ids = [f"flow-{i:02d}" for i in range(N_GROUPS)]
        started = time.monotonic()
        for group_id in ids:
            start_group(s, group_id, new_job(), ["login", "compute"])
        wait_for(lambda: _all_terminal(s, ids), timeout=90, what="every group to finish")
        elapsed = time.monotonic() - started
        _assert_walked_happy_path_once(s, ids)
        assert all(s.group(i).status is ImageGroupStatus.PASSED for i in ids)  # type: ignore[union-attr]
        print(f"\n{N_GROUPS} groups catalog -> PASSED in {elapsed:.2f}s")


def test_deploy_failure_then_redeploy_then_a_late_attempt_one_result_is_stale(
    manual: Stack,
) -> None:
    s, job = manual, new_job()
    start_group(s, "redeploy-1", job)
    wait_status(s, "redeploy-1", "DEPLOYING")
    outbox.send(s.client, outbox.stage_finished(job, "deploy", "failed", attempt=1))
    wait_status(s, "redeploy-1", "FAILED")

    s.run_cli("request", "deploy", "redeploy-1")
    group = s.group("redeploy-1")
    assert group is not None and (group.status, group.attempt) == ("DEPLOYING", 2)
    requests = [m for m in follow_ons(s, "redeploy-1") if m.task_name == "pipeline.deploy"]
    assert [m.body["payload"]["attempt"] for m in requests] == [1, 2]

    late = outbox.stage_finished(job, "deploy", "succeeded", attempt=1)
    result = s.client.send_task(
        "imagegroups.stage_finished", kwargs={"event": late}, queue="imagegroups.events"
    )
    assert result.get(timeout=20)["outcome"] == "stale"
    group = s.group("redeploy-1")
    assert group is not None and (group.status, group.attempt) == ("DEPLOYING", 2)
    assert moves(s, "redeploy-1")[-3:] == [
        ("BUILT", "DEPLOYING"),
        ("DEPLOYING", "FAILED"),
        ("FAILED", "DEPLOYING"),
    ]


def test_every_event_delivered_three_times_concurrently_applies_once(manual: Stack) -> None:
    s = manual
    jobs = {f"dup-{i}": new_job() for i in range(5)}

    def thrice(events: list[dict[str, object]]) -> None:
        sends = [e for e in events for _ in range(3)]
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda e: outbox.send(s.client, e), sends))

    thrice([outbox.catalog_parsed(j, g, ["compute"]) for g, j in jobs.items()])
    thrice([outbox.stage_finished(j, "build-image", "succeeded") for j in jobs.values()])
    for stage, running, reached in (
        ("deploy", "DEPLOYING", "RESTARTING"),
        ("pxe-boot", "RESTARTING", "VALIDATING"),
        ("validate", "VALIDATING", "PASSED"),
    ):
        for group_id in jobs:
            wait_status(s, group_id, running)
        thrice([outbox.stage_finished(j, stage, "succeeded") for j in jobs.values()])
        for group_id in jobs:
            wait_status(s, group_id, reached)
    _assert_walked_happy_path_once(s, list(jobs))
    outcomes = s.query(lambda uow: uow.inbox.count_by_outcome())
    # 5 groups x 5 events (catalog, build, deploy, pxe-boot, validate), each applied once.
    assert outcomes.get("applied") == 25
    for queue in ("pipeline.deploy", "pipeline.pxe_boot", "pipeline.validate"):
        sent = redis_messages(s.redis, queue)
        assert len(sent) == 5, queue
        # The Celery task id of each follow-on is its envelope's event_id.
        assert all(m["headers"]["id"] == _envelope(m)["event_id"] for m in sent)


def _envelope(message: dict[str, Any]) -> dict[str, Any]:
    body = message["body"]
    if message.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    envelope: dict[str, Any] = json.loads(body)[1]["event"]
    return envelope
