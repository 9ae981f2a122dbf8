"""A worker process killed mid-event: the message comes back, is counted, and applies once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text

from persistence.models import DeliveryRow, ImageGroupRow
from tests.integration.flow import moves, new_job, start_group, wait_status
from tests.integration.stack import stack, wait_for
from workers import publishing

pytestmark = pytest.mark.integration


def _children(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in found]


def _lock_waiters(engine: Engine) -> int:
    with engine.connect() as conn:
        waiting = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
        ).scalar_one()
    return int(waiting)


def test_a_killed_worker_process_redelivers_its_event_and_counts_the_delivery(
    tmp_path: Path,
) -> None:
    with stack(tmp_path, "lost", IMAGEGROUPS_LOCK_TIMEOUT_MS="60000") as s:
        worker = s.start_worker("--concurrency", "1")
        job = new_job()
        start_group(s, "lost-1", job)
        wait_status(s, "lost-1", "DEPLOYING")
        [child] = _children(worker.popen.pid)

        deployed = publishing.stage_finished(job, "deploy", "succeeded")
        with s.engine.connect() as blocker:
            # Hold the group's row lock so the worker's handler waits inside its transaction.
            blocker.execute(
                select(ImageGroupRow).where(ImageGroupRow.id == "lost-1").with_for_update()
            )
            publishing.send(s.client, deployed)
            wait_for(lambda: _lock_waiters(s.engine), timeout=20, what="a lock waiter")
            os.kill(child, signal.SIGKILL)
            wait_for(
                lambda: "WorkerLostError" in worker.output() or "exited" in worker.output(),
                timeout=20,
                what="the worker to notice its lost process",
            )
            blocker.rollback()

        wait_status(s, "lost-1", "RESTARTING")
        assert moves(s, "lost-1").count(("DEPLOYING", "DEPLOYED")) == 1
        with s.engine.connect() as conn:
            redeliveries = conn.execute(
                select(DeliveryRow.attempts).where(DeliveryRow.key == deployed["event_id"])
            ).scalar_one()
        assert redeliveries == 1  # delivered twice: the killed one, and the one that applied
