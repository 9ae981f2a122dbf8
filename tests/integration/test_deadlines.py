"""Stage deadlines on real PostgreSQL, Redis and worker processes: no group waits forever."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from domain import (
    STAGE_TIMEOUT,
    Image,
    ImageGroup,
    ImageGroupId,
    ImageGroupStatus,
    RoleName,
    StageName,
    StageState,
)
from persistence.models import ProcessedEventRow
from tests.integration.flow import (
    follow_ons,
    history,
    moves,
    new_job,
    start_group,
    wait_status,
)
from tests.integration.stack import Stack, stack, wait_for
from workers import outbox

pytestmark = pytest.mark.integration

GROUPS = [f"late-{n}" for n in range(6)]
#: Deploys are due 2 s after their request; the later stages have time to spare.
SETTINGS = {
    "IMAGEGROUPS_STAGE_TIMEOUT_DEPLOY": "2",
    "IMAGEGROUPS_STAGE_TIMEOUT_PXE_BOOT": "120",
    "IMAGEGROUPS_STAGE_TIMEOUT_VALIDATE": "120",
    "IMAGEGROUPS_DEADLINE_SWEEP_INTERVAL": "0.1",
}


def outcome_of(s: Stack, event_id: str) -> str | None:
    with s.engine.connect() as conn:
        found: str | None = conn.scalar(
            select(ProcessedEventRow.outcome).where(ProcessedEventRow.event_id == event_id)
        )
        return found


def expiry_lines(s: Stack) -> list[str]:
    return [
        line
        for process in s.processes
        for line in process.output().splitlines()
        if "by its deadline" in line
    ]


def answer(s: Stack, job: str, stage: str, attempt: int) -> str:
    event = outbox.stage_finished(job, stage, "succeeded", attempt=attempt)
    return outbox.send(s.client, event)


def test_unanswered_deploys_fail_once_each_with_two_workers_sweeping_and_redeploy_after(
    tmp_path: Path,
) -> None:
    with stack(tmp_path, "deadline", **SETTINGS) as s:
        s.start_worker("--concurrency", "1", name="worker-1")
        s.start_worker("--concurrency", "1", name="worker-2")
        jobs = {group_id: new_job() for group_id in GROUPS}
        for group_id, job in jobs.items():
            start_group(s, group_id, job)

        # Nobody answers the deploy requests: the deadline passes and a sweep fails them.
        for group_id in GROUPS:
            wait_status(s, group_id, "FAILED", timeout=30)

        # A result for the expired attempt arriving now changes nothing.
        late = answer(s, jobs["late-0"], "deploy", attempt=1)
        wait_for(lambda: outcome_of(s, late), timeout=30, what="the late result to be handled")
        assert outcome_of(s, late) == "stale"

        # The operator redeploys; the pipeline answers each new request in time.
        job = jobs["late-0"]
        s.run_cli("request", "deploy", "late-0")
        answer(s, job, "deploy", attempt=2)
        wait_status(s, "late-0", "RESTARTING")
        answer(s, job, "pxe-boot", attempt=2)
        wait_status(s, "late-0", "VALIDATING")
        answer(s, job, "validate", attempt=2)
        wait_status(s, "late-0", "PASSED")

        for group_id in GROUPS:
            history = moves(s, group_id)
            assert history.count(("DEPLOYING", "FAILED")) == 1, history
            requests = [m.body["event_type"] for m in follow_ons(s, group_id)]
            if group_id != "late-0":
                assert history[-1] == ("DEPLOYING", "FAILED")
                assert requests == ["deploy.requested"]  # the expiry asked for nothing more
        assert moves(s, "late-0")[2:] == [
            ("DEPLOYING", "FAILED"),
            ("FAILED", "DEPLOYING"),
            ("DEPLOYING", "DEPLOYED"),
            ("DEPLOYED", "RESTARTING"),
            ("RESTARTING", "RESTARTED"),
            ("RESTARTED", "VALIDATING"),
            ("VALIDATING", "PASSED"),
        ]
        assert len(expiry_lines(s)) == len(GROUPS)  # one expiry per group, whichever worker
        _assert_timeout_rows(s, jobs)


def _assert_timeout_rows(s: Stack, jobs: dict[str, str]) -> None:
    for group_id, job in jobs.items():
        if group_id == "late-0":
            continue  # its deploy row now holds attempt 2's success
        rows = s.query(lambda uow, job=job: uow.stages.find(job))  # type: ignore[misc]
        [deploy] = [r for r in rows if r.stage is StageName.DEPLOY]
        [expiry] = [t for t in history(s, group_id) if t.to_status is ImageGroupStatus.FAILED]
        assert (deploy.state, deploy.attempt) == (StageState.FAILED, 1)
        assert deploy.error_code == STAGE_TIMEOUT
        assert deploy.event_id == expiry.event_id  # the expiry's own command id
        assert deploy.error_summary is not None
        assert deploy.error_summary.startswith("no deploy result for attempt 1 by its deadline ")


def test_status_and_list_overdue_show_a_stage_past_its_deadline(tmp_path: Path) -> None:
    # No worker runs, so nothing sweeps: the group stays overdue for the operator to see.
    with stack(tmp_path, "overdue", IMAGEGROUPS_STAGE_TIMEOUT_DEPLOY="1") as s:
        _create_built(s, "overdue-1", new_job())
        _create_built(s, "on-time-1", new_job())
        s.run_cli("request", "deploy", "overdue-1")
        wait_for(
            lambda: "overdue-1" in s.run_cli("list", "--overdue").stdout,
            timeout=10,
            what="the deploy to pass its deadline",
        )
        listed = json.loads(s.run_cli("list", "--overdue", "--json").stdout)
        human = s.run_cli("status", "overdue-1").stdout

    assert listed["total"] == 1
    assert [g["image_group_id"] for g in listed["items"]] == ["overdue-1"]
    assert "deadline" not in listed["items"][0]  # the contract's status object, unchanged
    assert "(overdue)" in human


def _create_built(s: Stack, group_id: str, job: str) -> None:
    """A BUILT group written directly (no worker runs in this test)."""
    image = Image(str(uuid.uuid4()), RoleName("compute"), "compute.img")
    group = ImageGroup.create(
        ImageGroupId(group_id), job, [image], event_id=str(uuid.uuid4()), at=datetime.now(UTC)
    )
    with s.uow() as uow:
        uow.groups.save(group)
        uow.commit()
