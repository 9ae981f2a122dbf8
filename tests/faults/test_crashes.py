"""Crashes: a pool process or a whole worker killed, Redis killed and restarted from its AOF,
PostgreSQL restarted.

Each scenario runs groups through every stage (some planned to fail), crashes a part under
them, and ends by checking every invariant (tests/faults/invariants.py).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.pool import NullPool

from persistence.models import CatalogReservationRow, DeliveryRow, ImageGroupRow
from tests.faults.checks import (
    EVENTS_QUEUE,
    RECONNECT,
    broker_is_drained,
    letters,
    lock_wait_seconds,
)
from tests.faults.invariants import (
    assert_invariants,
    plan,
    publish,
)
from tests.faults.scenario import QUICK, answering, progressed
from tests.faults.servers import private_postgres, private_redis
from tests.integration.flow import moves, new_job, start_group, wait_status
from tests.integration.stack import Process, Stack, stack, stack_on, wait_for
from tests.pg import fresh_database
from tests.redis_db import lease_redis_db
from workers import outbox

pytestmark = pytest.mark.faults


def test_a_whole_worker_killed_while_holding_prefetched_events_loses_none(tmp_path: Path) -> None:
    with stack(tmp_path, "killworker", **QUICK) as s:
        doomed = s.start_worker("--concurrency", "1", "-n", "doomed@%h", name="doomed")
        plans = plan(12, "killed", fail_rate=0.3, seed=1)
        with answering(s, plans) as pipeline:
            first = plans[0]
            events = publish(s, first)[:1]
            wait_for(
                lambda: s.query(lambda u: u.catalogs.find_by_job_id(first.job_id)),
                timeout=20,
                what="the first catalog",
            )
            with s.engine.connect() as blocker:
                # The first build result waits on this lock inside its handler; the worker's
                # prefetch fills up with the events behind it, all unacknowledged.
                blocker.execute(
                    select(CatalogReservationRow)
                    .where(CatalogReservationRow.job_id == first.job_id)
                    .with_for_update()
                )
                events += publish(s, first)[1:]
                for planned in plans[1:]:
                    events += publish(s, planned)
                wait_for(lambda: s.redis.hlen("unacked") >= 4, timeout=20, what="a full prefetch")
                doomed.kill_all()
                blocker.rollback()
            held = s.redis.hlen("unacked")
            s.start_worker("--concurrency", "2", "-n", "survivor@%h", name="survivor")
            assert_invariants(s, plans, pipeline, events=events)
        assert held >= 4


def test_a_killed_pool_process_redelivers_its_event_counts_the_delivery_and_applies_once(
    tmp_path: Path,
) -> None:
    # The worker itself lives: Celery rejects the lost task's message back to the queue
    # (task_reject_on_worker_lost), unlike a whole worker's, which waits for its visibility.
    with stack(tmp_path, "lost", IMAGEGROUPS_LOCK_TIMEOUT_MS="60000") as s:
        worker = s.start_worker("--concurrency", "1")
        job = new_job()
        start_group(s, "lost-1", job)
        wait_status(s, "lost-1", "DEPLOYING")
        [child] = worker.children()
        deployed = outbox.stage_finished(job, "deploy", "succeeded")
        with s.engine.connect() as blocker:
            # Hold the group's row lock so the worker's handler waits inside its transaction.
            blocker.execute(
                select(ImageGroupRow).where(ImageGroupRow.id == "lost-1").with_for_update()
            )
            outbox.send(s.client, deployed)
            wait_for(lambda: lock_wait_seconds(s.engine) > 0, timeout=20, what="a lock waiter")
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
            redeliveries = conn.scalar(
                select(DeliveryRow.attempts).where(DeliveryRow.key == deployed["event_id"])
            )
        assert redeliveries == 1  # delivered twice: the killed one, and the one that applied
        assert letters(s) == []
        wait_for(lambda: broker_is_drained(s), timeout=10, what="an empty queue")


def test_redis_killed_mid_flow_and_restarted_from_its_aof_loses_nothing(tmp_path: Path) -> None:
    with (
        private_redis(tmp_path, fsync="everysec") as server,
        fresh_database("rediscrash") as database,
        stack_on(tmp_path, database, server.url, **QUICK) as s,
    ):
        worker = _crash_mid_flow(s, "redis", 2, crash=server.kill_and_start)
        assert RECONNECT in worker.output(), "the worker never noticed the crash"


def _crash_mid_flow(s: Stack, prefix: str, seed: int, crash: Callable[[], None]) -> Process:
    """Thirty groups under way, then `crash`; every invariant must hold after it."""
    worker = s.start_worker("--concurrency", "2")
    plans = plan(30, prefix, fail_rate=0.2, seed=seed)
    with answering(s, plans) as pipeline:
        events = [event for planned in plans for event in publish(s, planned)]
        wait_for(lambda: progressed(s, 5), timeout=30, what="the flow to be under way")
        crash()
        s.engine.dispose()  # the test's own pooled connections may have died with the server
        assert_invariants(s, plans, pipeline, events=events)
    return worker


@contextmanager
def _database_on(admin_url: str, name: str) -> Iterator[str]:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    yield admin_url.rsplit("/", 1)[0] + f"/{name}"


def test_postgresql_restarted_mid_flow_loses_nothing(tmp_path: Path) -> None:
    with (
        private_postgres() as server,
        _database_on(server.admin_url, "imagegroups") as database,
        lease_redis_db() as redis_url,
        stack_on(tmp_path, database, redis_url, **QUICK) as s,
    ):
        worker = _crash_mid_flow(s, "pg", 3, crash=server.restart)
        assert "retrying in" in worker.output(), "the restart went unnoticed"


def test_quick_settings_keep_the_default_relation_between_retries_and_recovery() -> None:
    from workers.runtime.lifecycle import recovery_warning
    from workers.settings import Settings

    assert recovery_warning(Settings.model_validate(QUICK)) is None


def test_a_live_worker_keeps_a_message_it_holds_past_the_visibility_timeout(
    tmp_path: Path,
) -> None:
    # Leases: the held message is renewed every second, so neither the other worker nor a
    # redelivery ever sees it, although it waits on a row lock for 2.5 timeouts.
    settings = QUICK | {
        "IMAGEGROUPS_VISIBILITY_TIMEOUT": "4",
        "IMAGEGROUPS_LOCK_TIMEOUT_MS": "60000",
    }
    settings["IMAGEGROUPS_TASK_TIME_LIMIT"] = "30"
    with stack(tmp_path, "lease", **settings) as s:
        s.start_worker("--concurrency", "1", "-n", "holder@%h", name="holder")
        job = new_job()
        start_group(s, "leased", job)
        wait_status(s, "leased", "DEPLOYING")
        s.start_worker("--concurrency", "1", "-n", "other@%h", name="other")
        deployed = outbox.stage_finished(job, "deploy", "succeeded")
        with s.engine.connect() as blocker:
            blocker.execute(
                select(ImageGroupRow).where(ImageGroupRow.id == "leased").with_for_update()
            )
            outbox.send(s.client, deployed)
            wait_for(
                lambda: lock_wait_seconds(s.engine) >= 10.0,
                timeout=30,
                what="a 10 s wait on the lock",
            )
            blocker.rollback()
        wait_status(s, "leased", "RESTARTING")
        with s.engine.connect() as conn:
            counted = conn.scalar(
                select(DeliveryRow.attempts).where(DeliveryRow.key == deployed["event_id"])
            )
        assert counted is None, "the message was delivered a second time"


def test_a_worker_killed_while_redis_answers_its_wait_loses_nothing(tmp_path: Path) -> None:
    """kombu's BRPOP took the message off the queue for a worker frozen in it, and stored it
    as unacknowledged only in a second round trip: killed then, the worker lost it (the soak
    once did). The fetch's wait takes nothing, and its pop stores in the same step."""
    with stack(tmp_path, "midfetch") as s:  # the defaults: nothing here waits for recovery
        doomed = s.start_worker("--concurrency", "1", "-n", "midfetch@%h", name="midfetch")
        warm = new_job()
        outbox.send(s.client, outbox.catalog_parsed(warm, f"warm-{warm[:8]}", ["compute"]))
        wait_for(
            lambda: s.query(lambda u: u.catalogs.find_by_job_id(warm)), timeout=30, what="warm-up"
        )
        # Its ack leaves for Redis up to 10 ms later (batched): nothing unacknowledged first.
        wait_for(lambda: s.redis.hlen("unacked") == 0, timeout=10, what="the warm-up's ack")

        def waiting() -> bool:
            clients = s.redis.client_list()
            return any(c.get("cmd") == "blmove" and "b" in c.get("flags", "") for c in clients)

        for _ in range(5):  # frozen while blocked in its wait, not between two of them
            wait_for(waiting, timeout=10, what="the worker blocked in its wait")
            os.kill(doomed.popen.pid, signal.SIGSTOP)  # Redis still answers its wait
            if waiting():
                break
            os.kill(doomed.popen.pid, signal.SIGCONT)
        assert waiting()
        job = new_job()
        outbox.send(s.client, outbox.catalog_parsed(job, f"kept-{job[:8]}", ["compute"]))
        wait_for(lambda: not waiting(), timeout=10, what="Redis to answer the wait")
        assert s.redis.llen(EVENTS_QUEUE) == 1 and s.redis.hlen("unacked") == 0  # still queued
        doomed.kill_all()
        s.start_worker("--concurrency", "1", "-n", "survivor@%h", name="survivor")
        wait_for(
            lambda: s.query(lambda u: u.catalogs.find_by_job_id(job)),
            timeout=30,
            what="the catalog to be applied by the survivor",
        )
