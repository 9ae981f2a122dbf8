"""`history` with causes and `trace`, run through `main(argv)` on a real PostgreSQL database."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from domain import StageName
from persistence.db import make_engine
from persistence.migrate import upgrade
from persistence.uow import SqlUnitOfWork
from tests.pg import fresh_database
from workers import handlers, outbox
from workers.cli.main import main
from workers.edge.accept import CatalogParsedEvent, StageFinishedEvent
from workers.outbox import FollowOns
from workers.runtime import root
from workers.settings import Settings

pytestmark = pytest.mark.integration

T0 = datetime(2026, 2, 1, 8, 0, tzinfo=UTC)
GROUP = "trace-me"
FORGED = "disk \x1b[2J\x1b[31mgone\rOK"  # clears the screen, recolours, rewrites the line


class Clock:
    def __init__(self) -> None:
        self.last = T0

    def __call__(self) -> datetime:
        self.last += timedelta(milliseconds=250)
        return self.last


@dataclass
class Seeded:
    job_id: str
    events: dict[str, str] = field(default_factory=dict)


def seed(engine: Engine) -> Seeded:
    """Built, deploy attempt 1 failed (delivered twice), redeployed, then a late attempt-1
    success (stale), then attempt 2 deployed (the pxe-boot request goes out)."""
    deps = handlers.Deps(
        lambda: SqlUnitOfWork(engine, FollowOns()), Clock(), lambda: str(uuid.uuid4())
    )
    seeded = Seeded(str(uuid.uuid4()))
    catalog = outbox.catalog_parsed(seeded.job_id, GROUP, ["compute"])
    handlers.handle_catalog_parsed(
        CatalogParsedEvent.model_validate(catalog).to_command(), deps=deps
    )
    seeded.events["catalog"] = str(catalog["event_id"])

    def finish(name: str, stage: str, outcome: str, times: int = 1, **kw: Any) -> None:
        event = outbox.stage_finished(seeded.job_id, stage, outcome, **kw)
        for _ in range(times):
            command = StageFinishedEvent.model_validate(event).to_command()
            handlers.handle_stage_finished(command, deps=deps)
        seeded.events[name] = str(event["event_id"])

    finish("build", "build-image", "succeeded")
    with SqlUnitOfWork(engine) as uow:
        [request_1] = uow.outbox.claim_unsent(
            created_before=T0 + timedelta(days=1), lease_until=T0, now=T0, limit=5
        )
        uow.outbox.mark_sent([request_1.event_id], deps.clock())
        uow.commit()
    seeded.events["request-1"] = request_1.event_id
    finish("failed", "deploy", "failed", 2, attempt=1, causation_id=request_1.event_id,
           error_code="E_DEPLOY", error_summary=FORGED)  # fmt: skip
    redeploy = handlers.request_stage(GROUP, StageName.DEPLOY, deps=deps)
    seeded.events["redeploy"] = redeploy.outcome.event_id
    finish("late", "deploy", "succeeded", attempt=1)
    finish("deployed", "deploy", "succeeded", attempt=2)
    return seeded


@pytest.fixture(scope="module")
def seeded() -> Iterator[Seeded]:
    with fresh_database("cli_trace") as url:
        upgrade(url)
        engine = make_engine(url)
        root.configure(Settings(DATABASE_URL=url, CELERY_BROKER_URL="redis://127.0.0.1:1/0"))
        try:
            yield seed(engine)
        finally:
            root.configure(None)
            engine.dispose()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_history_json_gives_every_move_its_cause_and_keeps_attempt_1s_failure(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "history", GROUP, "--json")

    assert status == 0, err
    entries = json.loads(out)
    assert [set(e) for e in entries] == [
        {"from_status", "to_status", "event_id", "at", "cause"}
    ] * 6
    failed = entries[2]
    assert (failed["to_status"], failed["event_id"]) == ("FAILED", seeded.events["failed"])
    assert failed["cause"] == {
        "kind": "event",
        "event_type": "stage.finished",
        "stage": "deploy",
        "attempt": 1,
        "outcome": "failed",
        "error_code": "E_DEPLOY",
        "error_summary": FORGED,  # JSON keeps it exact
        "command": None,
    }
    assert entries[3]["cause"]["kind"] == "operator"
    assert (entries[3]["cause"]["command"], entries[3]["cause"]["attempt"]) == ("request deploy", 2)


def test_history_shows_the_cause_on_each_line_with_event_data_escaped(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "history", GROUP)

    assert status == 0, err
    assert "\x1b" not in out and "\r" not in out
    assert "stage.finished: deploy failed, attempt 1, E_DEPLOY" in out
    assert "operator: request deploy, attempt 2" in out
    assert "disk \\x1b[2J\\x1b[31mgone\\rOK" in out  # the failure table, escaped


def test_trace_json_links_events_in_and_follow_ons_out_by_causation_id(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "trace", GROUP, "--json")

    assert status == 0, err
    document = json.loads(out)
    assert document["image_group_id"] == GROUP
    events = document["events"]
    ev = seeded.events
    by_id = {e["event_id"]: e for e in events}
    assert [e["direction"] for e in events].count("out") == 3  # deploy 1, deploy 2, pxe-boot
    assert by_id[ev["request-1"]]["causation_id"] == ev["build"]
    assert by_id[ev["request-1"]]["outcome"] == "sent"
    assert by_id[ev["failed"]]["causation_id"] == ev["request-1"]
    assert by_id[ev["failed"]]["after_ms"] is not None and by_id[ev["failed"]]["after_ms"] > 0
    assert (by_id[ev["failed"]]["outcome"], by_id[ev["failed"]]["duplicates"]) == ("applied", 1)
    assert by_id[ev["late"]]["outcome"] == "stale"
    assert by_id[ev["redeploy"]]["cause"]["command"] == "request deploy"
    outs = [e for e in events if e["direction"] == "out"]
    assert [(e["event_type"], e["attempt"]) for e in outs] == [
        ("deploy.requested", 1),
        ("deploy.requested", 2),
        ("pxe_boot.requested", 2),
    ]
    assert outs[1]["causation_id"] == ev["redeploy"]
    assert outs[2]["causation_id"] == ev["deployed"]
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)


def test_trace_prints_a_timeline_with_the_delay_to_each_follow_on(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "trace", GROUP)

    assert status == 0, err
    assert out.startswith(f"trace of {GROUP} (job {seeded.job_id}), oldest first")
    lines = out.splitlines()
    request_1 = next(line for line in lines if seeded.events["request-1"][:8] in line.split()[-1:])
    assert " out " in request_1 and "deploy.requested, attempt 1" in request_1
    assert f"{seeded.events['build'][:8]}" in request_1 and " ms " in request_1
    assert any("applied (+1 duplicate)" in line for line in lines)
    assert any(" stale " in line for line in lines)
    assert "\x1b" not in out


def test_trace_of_an_unknown_group_prints_a_json_error_and_exits_1(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "trace", "no-such-group", "--json")

    assert status == 1
    assert json.loads(out)["error"] == "no image group with id 'no-such-group'"
    assert "no image group with id 'no-such-group'" in err


def test_trace_help_says_what_retention_removes(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "trace", "--help")

    assert status == 0
    assert "IMAGEGROUPS_INBOX_RETENTION" in out and "7 days" in out
    assert "IMAGEGROUPS_OUTBOX_RETENTION" in out and "a day" in out
