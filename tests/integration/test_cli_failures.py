"""What the CLI tells an operator about failures: why a group failed, and a redeploy whose
follow-on cannot be published, on real PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from domain import ImageGroupId, StageName
from persistence.db import make_engine
from persistence.migrate import upgrade
from persistence.uow import SqlUnitOfWork
from tests.integration.cli_main import run_main
from tests.pg import fresh_database
from workers import handlers, outbox
from workers.edge.accept import CatalogParsedEvent, StageFinishedEvent
from workers.outbox import FollowOns

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).with_name("imagegroups"))
REPO = Path(__file__).resolve().parents[2]
UNREACHABLE_BROKER = "redis://127.0.0.1:1/0"


@dataclass
class Seeded:
    url: str
    engine: Engine
    events: dict[str, str]  # "group/stage/attempt" -> the stage.finished event_id

    def run(self, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
        """The installed command in a process of its own: its stderr is all the operator sees."""
        environment = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGROUPS_")}
        environment |= {"DATABASE_URL": self.url, "CELERY_BROKER_URL": UNREACHABLE_BROKER} | env
        return subprocess.run(
            [CLI, *argv], env=environment, capture_output=True, text=True, timeout=60, cwd=REPO
        )

    def main(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """The same command through `main(argv)` in this process."""
        return run_main(list(argv), DATABASE_URL=self.url, CELERY_BROKER_URL=UNREACHABLE_BROKER)

    def json(self, *argv: str) -> Any:
        done = self.main(*argv, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


class Pipeline:
    """Drives one group through the real handlers, as the worker would."""

    def __init__(self, engine: Engine, group_id: str, events: dict[str, str]) -> None:
        self.deps = handlers.Deps(
            lambda: SqlUnitOfWork(engine, FollowOns()),
            lambda: datetime.now(UTC),
            lambda: str(uuid.uuid4()),
            True,
        )
        self.group_id, self.job_id, self.events = group_id, str(uuid.uuid4()), events
        event = outbox.catalog_parsed(self.job_id, group_id, ["compute"])
        handlers.handle_catalog_parsed(
            CatalogParsedEvent.model_validate(event).to_command(), deps=self.deps
        )
        self.finish("build-image", "succeeded", 1)

    def finish(
        self,
        stage: str,
        outcome: str,
        attempt: int,
        code: str | None = None,
        why: str | None = None,
    ) -> None:
        event = outbox.stage_finished(
            self.job_id, stage, outcome, attempt=attempt, error_code=code, error_summary=why
        )
        handlers.handle_stage_finished(
            StageFinishedEvent.model_validate(event).to_command(), deps=self.deps
        )
        self.events[f"{self.group_id}/{stage}/{attempt}"] = str(event["event_id"])

    def redeploy(self) -> None:
        handlers.request_stage(self.group_id, StageName.DEPLOY, deps=self.deps)


def seed(engine: Engine) -> dict[str, str]:
    events: dict[str, str] = {}
    once = Pipeline(engine, "failed-once", events)
    once.finish("deploy", "failed", 1, "E_DEPLOY", "node n2 unreachable")
    # Attempt 1 fails at validate; the redeploy (attempt 2) fails at pxe-boot.
    twice = Pipeline(engine, "failed-twice", events)
    for stage in ("deploy", "pxe-boot"):
        twice.finish(stage, "succeeded", 1)
    twice.finish("validate", "failed", 1, "E_VALIDATE", "ping lost")
    twice.redeploy()
    twice.finish("deploy", "succeeded", 2)
    twice.finish("restart", "failed", 2, "E_PXE", "no DHCP lease")
    Pipeline(engine, "failed-quietly", events).finish("deploy", "failed", 1)
    Pipeline(engine, "deploying", events)
    Pipeline(engine, "to-redeploy", events).finish("deploy", "failed", 1)
    return events


@pytest.fixture(scope="module")
def seeded() -> Iterator[Seeded]:
    with fresh_database("failures") as url:
        upgrade(url)
        engine = make_engine(url)
        try:
            yield Seeded(url, engine, seed(engine))
        finally:
            engine.dispose()


# status and list ---------------------------------------------------------------------------


def test_status_of_a_failed_group_says_which_stage_failed_and_why(seeded: Seeded) -> None:
    document = seeded.json("status", "failed-once")

    assert document["status"] == "FAILED"
    assert document["failure"] == {
        "stage": "deploy",
        "attempt": 1,
        "error_code": "E_DEPLOY",
        "error_summary": "node n2 unreachable",
    }


def test_status_after_a_redeploy_names_the_failure_of_the_latest_attempt(
    seeded: Seeded,
) -> None:
    document = seeded.json("status", "failed-twice")

    assert (document["status"], document["attempt"]) == ("FAILED", 2)
    assert document["failure"] == {
        "stage": "pxe-boot",
        "attempt": 2,
        "error_code": "E_PXE",
        "error_summary": "no DHCP lease",
    }


def test_a_failure_reported_without_a_code_has_null_code_and_summary(seeded: Seeded) -> None:
    document = seeded.json("status", "failed-quietly")

    assert document["failure"] == {
        "stage": "deploy",
        "attempt": 1,
        "error_code": None,
        "error_summary": None,
    }


def test_a_group_that_has_not_failed_has_no_failure_field(seeded: Seeded) -> None:
    document = seeded.json("status", "deploying")

    assert document["status"] == "DEPLOYING"
    assert "failure" not in document


def test_list_items_are_the_status_objects_failure_included(seeded: Seeded) -> None:
    page = seeded.json("list", "--status", "FAILED")
    items = {item["image_group_id"]: item for item in page["items"]}

    assert set(items) >= {"failed-once", "failed-twice", "failed-quietly"}
    for group_id in ("failed-once", "failed-twice", "failed-quietly"):
        assert items[group_id] == seeded.json("status", group_id)
    assert items["failed-twice"]["failure"]["stage"] == "pxe-boot"


def test_status_and_list_without_json_show_the_failing_stage_and_reason(seeded: Seeded) -> None:
    status = seeded.main("status", "failed-twice")
    listing = seeded.main("list", "--status", "FAILED")

    assert status.returncode == 0, status.stderr
    fields = [line.split(None, 1) for line in status.stdout.splitlines() if line]
    assert ["failed_stage", "pxe-boot (attempt 2)"] in fields
    assert ["error_code", "E_PXE"] in fields
    assert ["error_summary", "no DHCP lease"] in fields
    row = next(line for line in listing.stdout.splitlines() if line.startswith("failed-twice"))
    assert row.split()[-2:] == ["pxe-boot:", "E_PXE"]


# history -----------------------------------------------------------------------------------


def test_history_json_keeps_the_contract_shape_for_a_failed_group(seeded: Seeded) -> None:
    entries = seeded.json("history", "failed-once")

    assert [set(e) for e in entries] == [
        {"from_status", "to_status", "event_id", "at", "cause"}
    ] * 3
    assert entries[-1]["to_status"] == "FAILED"
    assert entries[-1]["event_id"] == seeded.events["failed-once/deploy/1"]
    cause = entries[-1]["cause"]
    assert (cause["kind"], cause["stage"], cause["attempt"]) == ("event", "deploy", 1)
    assert (cause["error_code"], cause["error_summary"]) == ("E_DEPLOY", "node n2 unreachable")


def test_history_without_json_lists_each_failure_with_stage_attempt_and_reason(
    seeded: Seeded,
) -> None:
    done = seeded.main("history", "failed-twice")

    assert done.returncode == 0, done.stderr
    tables = done.stdout.split("\n\n")
    assert len(tables) == 2, done.stdout
    header, _rule, *rows = tables[1].strip().splitlines()
    assert header.split() == [
        *["FAILED", "AT", "STAGE", "ATTEMPT", "ERROR", "CODE", "ERROR", "SUMMARY"]
    ]
    assert [row.split()[1:] for row in rows] == [
        ["validate", "1", "E_VALIDATE", "ping", "lost"],
        ["pxe-boot", "2", "E_PXE", "no", "DHCP", "lease"],
    ]


# a redeploy with the broker down -----------------------------------------------------------


def test_a_redeploy_with_the_broker_down_prints_one_warning_line_and_no_traceback(
    seeded: Seeded,
) -> None:
    done = seeded.run("request", "deploy", "to-redeploy")

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "to-redeploy: DEPLOYING (attempt 2)"
    assert "(pending in outbox)" in done.stdout
    [warning] = done.stderr.splitlines()
    assert warning.startswith("imagegroups: warning: the follow-on event(s) ")
    assert "could not be published yet (OperationalError: " in warning
    assert "Connection refused" in warning
    assert warning.endswith("they stay in the outbox and a running worker sends them")
    with SqlUnitOfWork(seeded.engine) as uow:
        pending, _oldest = uow.outbox.pending()
        group = uow.groups.find_by_id(ImageGroupId("to-redeploy"))
    assert group is not None and group.attempt == 2
    assert pending >= 1
