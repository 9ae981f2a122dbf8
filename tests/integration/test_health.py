"""`imagegroups health` on a missing database, and on events that no worker consumes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.integration.stack import Stack, stack
from tests.pg import fresh_database
from tests.redis_db import lease_redis_db
from workers.outbox import catalog_parsed, send

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).with_name("imagegroups"))


def _health(cwd: Path, **env: str) -> tuple[int, dict[str, object]]:
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
    done = subprocess.run(
        [CLI, "health", "--json"], env=environment | env, cwd=cwd, capture_output=True, text=True
    )
    return done.returncode, json.loads(done.stdout)


def test_health_names_a_database_that_was_never_migrated_and_how_to_fix_it(tmp_path: Path) -> None:
    with fresh_database("health") as url, lease_redis_db() as broker:
        code, report = _health(tmp_path, DATABASE_URL=url, CELERY_BROKER_URL=broker)
    assert code == 1 and report["healthy"] is False
    database = report["database"]
    assert isinstance(database, dict) and database["ok"] is False
    assert "never migrated" in database["error"] and "imagegroups db upgrade" in database["error"]


def test_health_without_a_database_url_creates_no_database_file(tmp_path: Path) -> None:
    with lease_redis_db() as broker:
        code, report = _health(tmp_path, CELERY_BROKER_URL=broker)
    assert code == 1
    database = report["database"]
    assert isinstance(database, dict) and "DATABASE_URL is not set" in database["error"]
    assert list(tmp_path.iterdir()) == []


def _waiting_events(s: Stack, ages: tuple[float, ...]) -> None:
    """Catalog events sent by a publisher, one `age` seconds old each, the oldest first."""
    now = datetime.now(UTC)
    for age in ages:
        event = catalog_parsed(str(uuid.uuid4()), f"h-{uuid.uuid4().hex[:8]}", ["slurm_node"])
        send(s.client, event | {"occurred_at": (now - timedelta(seconds=age)).isoformat()})


def _follow_on_nobody_takes(s: Stack) -> None:
    s.client.send_task("pipeline.deploy", kwargs={"event": {}}, queue="pipeline.deploy")


def test_health_fails_naming_the_events_queue_its_depth_and_oldest_age_when_no_worker_consumes(
    tmp_path: Path,
) -> None:
    with stack(tmp_path, "hnoworker") as s:
        _waiting_events(s, (120.0, 5.0))
        _follow_on_nobody_takes(s)

        done = s.run_cli("health", "--json", check=False)
        human = s.run_cli("health", check=False)

    report = json.loads(done.stdout)
    assert done.returncode == 1 and report["healthy"] is False
    events = report["queues"]["imagegroups.events"]
    assert (events["depth"], events["consumers"]) == (2, [])
    assert 120 <= events["oldest_age_seconds"] < 180, events
    [problem] = report["problems"]
    assert problem.startswith("2 event(s) waiting in imagegroups.events, the oldest occurred 1")
    assert "no live worker consumes that queue" in problem
    depths = {name: q["depth"] for name, q in report["queues"].items()}
    assert depths == {
        "imagegroups.events": 2,
        "pipeline.deploy": 1,
        "pipeline.pxe_boot": 0,
        "pipeline.validate": 0,
    }
    assert human.returncode == 1
    assert re.search(
        r"queue imagegroups\.events\s+2 waiting\s+oldest occurred 1\d\d\.\ds", human.stdout
    )
    assert re.search(r"queue pipeline\.deploy\s+1 waiting\s+no live consumer", human.stdout)
    assert "2 event(s) waiting in imagegroups.events" in human.stdout


def test_health_is_healthy_with_a_live_worker_on_the_events_queue_and_reports_pipeline_depths(
    tmp_path: Path,
) -> None:
    with stack(tmp_path, "hworker") as s:
        _follow_on_nobody_takes(s)
        s.start_worker("--concurrency", "1", "-n", "health-probe@%h")

        done = s.run_cli("health", "--json", check=False)

    report = json.loads(done.stdout)
    assert (done.returncode, report["problems"]) == (0, []), report
    [consumer] = report["queues"]["imagegroups.events"]["consumers"]
    assert consumer.startswith("health-probe@")
    assert report["queues"]["pipeline.deploy"]["depth"] == 1
    assert report["queues"]["pipeline.deploy"]["consumers"] == []


def test_health_on_rabbitmq_fails_with_the_events_queue_depth_when_no_worker_consumes(
    tmp_path: Path, vhost: str
) -> None:
    with stack(tmp_path, "hrabbit", broker=vhost) as s:
        _waiting_events(s, (60.0, 1.0, 1.0))
        _follow_on_nobody_takes(s)

        done = s.run_cli("health", "--json", check=False)

    report = json.loads(done.stdout)
    assert done.returncode == 1
    events = report["queues"]["imagegroups.events"]
    # RabbitMQ shows no message without taking it: the depth and its consumer count only.
    assert (events["depth"], events["broker_consumers"], events["oldest_age_seconds"]) == (
        3,
        0,
        None,
    )
    assert report["queues"]["pipeline.deploy"]["depth"] == 1
    assert report["problems"] == [
        "3 event(s) waiting in imagegroups.events, and no live worker consumes that queue: "
        "start one (`celery -A workers worker`)"
    ]
