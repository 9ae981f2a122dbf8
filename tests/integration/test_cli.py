"""The `imagegroups` command on real PostgreSQL and Redis: the installed command for the entry
point, exit codes and every command that publishes; `main(argv)` for what is formatting."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, text

from domain import DeadLetter, DeadLetterStatus, ImageGroupId
from persistence.db import make_engine
from persistence.uow import SqlUnitOfWork, StoreUnitOfWork
from tests.integration.cli_main import run_main
from tests.pg import fresh_database
from tests.redis_db import lease_redis_db
from workers import handlers, outbox
from workers.edge.accept import CatalogParsedEvent, DeployRequestedEvent, StageFinishedEvent
from workers.edge.dead_letters import protocol_body
from workers.messages import CATALOG_PARSED
from workers.outbox import FollowOns

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "catalogs"
CLI = str(Path(sys.executable).with_name("imagegroups"))
REDIS_URL = ""  # leased by the module fixture below
BAD_BROKER = "redis://127.0.0.1:1/0"
T0 = datetime(2024, 1, 1, tzinfo=UTC)


class Clock:
    """One second later on every call, so creation order and timestamps are known exactly."""

    def __init__(self) -> None:
        self.last = T0

    def __call__(self) -> datetime:
        self.last += timedelta(seconds=1)
        return self.last


@dataclass
class Seeded:
    job_id: str
    created_at: datetime
    events: dict[str, str] = field(default_factory=dict)
    times: dict[str, datetime] = field(default_factory=dict)


@dataclass
class Env:
    database_url: str
    engine: Engine
    redis: redis.Redis
    groups: dict[str, Seeded]
    upgrade: subprocess.CompletedProcess[str]
    early: dict[str, subprocess.CompletedProcess[str]]

    def run(self, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
        """The installed command in a process of its own (for commands that publish)."""
        return run_cli(self.database_url, list(argv), **env)

    def main(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """The same command through `main(argv)` in this process."""
        return run_main(list(argv), DATABASE_URL=self.database_url, CELERY_BROKER_URL=REDIS_URL)

    def uow(self) -> StoreUnitOfWork:
        return SqlUnitOfWork(self.engine)

    def status(self, group_id: str) -> tuple[str, int]:
        with self.uow() as uow:
            group = uow.groups.find_by_id(ImageGroupId(group_id))
        assert group is not None
        return group.status.value, group.attempt

    def history_length(self, group_id: str) -> int:
        with self.uow() as uow:
            return len(uow.history.list_for_group(ImageGroupId(group_id)))

    def add_letter(self, body: str, **fields: Any) -> int:
        letter = DeadLetter(
            **{
                "id": None,
                "task_name": CATALOG_PARSED.task,
                "event_id": None,
                "body": body,
                "content_type": "application/json",
                "error_type": "DuplicateImageGroupError",
                "error_message": "image group 'x' is already held by job y",
                "traceback": "Traceback (most recent call last):\n  boom\n",
                "attempts": 1,
                "status": DeadLetterStatus.DEAD,
                "first_failed_at": T0,
                "last_failed_at": T0 + timedelta(seconds=30),
            }
            | fields
        )
        with self.uow() as uow:
            letter_id = uow.dead_letters.add(letter)
            uow.commit()
        return letter_id

    def letter(self, letter_id: int) -> DeadLetter:
        with self.uow() as uow:
            letter = uow.dead_letters.get(letter_id)
        assert letter is not None
        return letter


def run_cli(database_url: str, argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGROUPS_")}
    environment |= {"DATABASE_URL": database_url, "CELERY_BROKER_URL": REDIS_URL} | env
    return subprocess.run(
        [CLI, *argv], env=environment, capture_output=True, text=True, timeout=60, cwd=REPO
    )


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def queued(client: redis.Redis, queue: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(headers, envelope) of every kombu message waiting on a Redis list, oldest first."""
    found = []
    for raw in reversed(client.lrange(queue, 0, -1)):
        message = json.loads(raw)
        _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        found.append((message["headers"], kwargs["event"]))
    return found


# Seeding, in process, through the real handlers --------------------------------------------


def seed(engine: Engine) -> dict[str, Seeded]:
    """Five groups, oldest first: FAILED, DEPLOYING, BUILT, PASSED, BUILT."""
    clock, factory = Clock(), engine

    def deps(auto: bool) -> handlers.Deps:
        return handlers.Deps(
            lambda: SqlUnitOfWork(factory, FollowOns()), clock, lambda: str(uuid.uuid4()), auto
        )

    full = [("deploy", "succeeded"), ("pxe-boot", "succeeded"), ("validate", "succeeded")]
    return {
        "cli-failed": _seed(deps(True), clock, "cli-failed", [("deploy", "failed")]),
        "cli-deploying": _seed(deps(True), clock, "cli-deploying", []),
        "cli-built": _seed(deps(False), clock, "cli-built", []),
        "cli-passed": _seed(deps(True), clock, "cli-passed", full),
        "cli-built-2": _seed(deps(False), clock, "cli-built-2", []),
    }


def _seed(
    deps: handlers.Deps, clock: Clock, group_id: str, stages: list[tuple[str, str]]
) -> Seeded:
    """Each handler reads the clock once, so `clock.last` is the time it applied its event."""
    job_id = str(uuid.uuid4())
    event = outbox.catalog_parsed(job_id, group_id, ["login", "compute"], {"login": "login-v2.img"})
    handlers.handle_catalog_parsed(CatalogParsedEvent.model_validate(event).to_command(), deps=deps)
    seeded = Seeded(job_id, created_at=T0)
    for stage, outcome in [("build-image", "succeeded"), *stages]:
        seeded.events[stage] = _finish(deps, job_id, stage, outcome)
        seeded.times[stage] = clock.last
    seeded.created_at = seeded.times["build-image"]
    return seeded


def _finish(deps: handlers.Deps, job_id: str, stage: str, outcome: str) -> str:
    event = outbox.stage_finished(job_id, stage, outcome)
    handlers.handle_stage_finished(StageFinishedEvent.model_validate(event).to_command(), deps=deps)
    return str(event["event_id"])


#: Read-only commands run once, before any test changes a group: these through the installed
#: command, concurrently (the entry point and its exit codes end to end) ...
EARLY = {
    "status-missing": ["status", "no-such-group", "--json"],
    "health": ["health", "--json"],
    "upgrade-again": ["db", "upgrade"],
    "health-bad-broker": ["health", "--json"],
}
EARLY_ENV = {"health-bad-broker": {"CELERY_BROKER_URL": BAD_BROKER}}
#: ... and these, whose formatting is the point, through `main(argv)`.
EARLY_MAIN = {
    "status": ["status", "cli-passed", "--json"],
    "status-human": ["status", "cli-passed"],
    "list": ["list", "--json"],
    "page-1": ["list", "--limit", "2", "--offset", "0", "--json"],
    "page-2": ["list", "--limit", "2", "--offset", "2", "--json"],
    "page-3": ["list", "--limit", "2", "--offset", "4", "--json"],
    "list-passed": ["list", "--status", "passed", "--json"],
    "history": ["history", "cli-passed", "--json"],
    "history-missing": ["history", "no-such-group"],
    "letter-missing": ["dead-letters", "show", "999999"],
}


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    global REDIS_URL
    with lease_redis_db() as REDIS_URL, fresh_database("cli") as url:
        upgrade = run_cli(url, ["db", "upgrade"])
        assert upgrade.returncode == 0, upgrade.stderr
        engine = make_engine(url)
        client = redis.Redis.from_url(REDIS_URL)
        try:
            groups = seed(engine)
            with ThreadPoolExecutor(max_workers=4) as pool:
                futures = {
                    key: pool.submit(run_cli, url, argv, **EARLY_ENV.get(key, {}))
                    for key, argv in EARLY.items()
                }
                early = {k: f.result() for k, f in futures.items()}
            running = Env(url, engine, client, groups, upgrade, early)
            early |= {key: running.main(*argv) for key, argv in EARLY_MAIN.items()}
            yield running
        finally:
            engine.dispose()
            client.close()


def iso(at: datetime) -> str:
    return at.isoformat()


# db upgrade ------------------------------------------------------------------------------------


def test_db_upgrade_migrates_an_empty_database_to_head_and_is_repeatable(env: Env) -> None:
    assert "head" in env.upgrade.stdout
    with env.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()

    assert env.early["upgrade-again"].returncode == 0


# status, list, history ---------------------------------------------------------------------


def test_status_json_is_the_contract_object_with_iso_timestamps(env: Env) -> None:
    seeded = env.groups["cli-passed"]

    assert as_json(env.early["status"]) == {
        "image_group_id": "cli-passed",
        "job_id": seeded.job_id,
        "status": "PASSED",
        "attempt": 1,
        "images": [
            {"role": "compute", "image_name": "compute.img"},
            {"role": "login", "image_name": "login-v2.img"},
        ],
        "created_at": iso(seeded.created_at),
        "updated_at": iso(seeded.times["validate"]),
    }


def test_status_without_json_prints_an_aligned_table(env: Env) -> None:
    result = env.early["status-human"]

    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert ["status", "PASSED"] in lines
    assert ["login", "login-v2.img"] in lines


@pytest.mark.parametrize("key", ["status-missing", "history-missing"])
def test_an_unknown_group_exits_1_with_a_message_on_stderr(env: Env, key: str) -> None:
    result = env.early[key]

    assert result.returncode == 1
    assert "no image group with id 'no-such-group'" in result.stderr
    if key == "status-missing":  # with --json: one JSON document on stdout too
        assert json.loads(result.stdout)["error"] == "no image group with id 'no-such-group'"
    else:
        assert result.stdout == ""


NEWEST_FIRST = ["cli-built-2", "cli-passed", "cli-built", "cli-deploying", "cli-failed"]


def test_list_json_is_newest_first_with_default_limit_and_offset(env: Env) -> None:
    page = as_json(env.early["list"])

    assert (page["total"], page["limit"], page["offset"]) == (5, 50, 0)
    assert [g["image_group_id"] for g in page["items"]] == NEWEST_FIRST
    assert [g["status"] for g in page["items"]] == [
        "BUILT",
        "PASSED",
        "BUILT",
        "DEPLOYING",
        "FAILED",
    ]
    assert page["items"][1] == as_json(env.early["status"])


def test_list_pages_through_five_groups_two_at_a_time(env: Env) -> None:
    pages = [as_json(env.early[f"page-{n}"]) for n in (1, 2, 3)]

    assert [len(p["items"]) for p in pages] == [2, 2, 1]
    assert [(p["total"], p["limit"], p["offset"]) for p in pages] == [
        (5, 2, 0),
        (5, 2, 2),
        (5, 2, 4),
    ]
    assert [g["image_group_id"] for p in pages for g in p["items"]] == NEWEST_FIRST


def test_list_filters_by_status(env: Env) -> None:
    page = as_json(env.early["list-passed"])

    assert [g["image_group_id"] for g in page["items"]] == ["cli-passed"]
    assert page["total"] == 1


def test_history_json_lists_every_transition_oldest_first(env: Env) -> None:
    seeded = env.groups["cli-passed"]
    ev, at = seeded.events, seeded.times

    def move(old: str | None, new: str, stage: str) -> dict[str, Any]:
        cause = {
            "kind": "event",
            "event_type": "stage.finished",
            "stage": stage,
            "attempt": 1,
            "outcome": "succeeded",
            "error_code": None,
            "error_summary": None,
            "command": None,
        }
        return {
            "from_status": old,
            "to_status": new,
            "event_id": ev[stage],
            "at": iso(at[stage]),
            "cause": cause,  # the result that caused the move (and, auto-advanced, the next)
        }

    assert as_json(env.early["history"]) == [
        move(None, "BUILT", "build-image"),
        move("BUILT", "DEPLOYING", "build-image"),
        move("DEPLOYING", "DEPLOYED", "deploy"),
        move("DEPLOYED", "RESTARTING", "deploy"),
        move("RESTARTING", "RESTARTED", "pxe-boot"),
        move("RESTARTED", "VALIDATING", "pxe-boot"),
        move("VALIDATING", "PASSED", "validate"),
    ]


# request and cleanup -----------------------------------------------------------------------


def test_request_deploy_of_a_failed_group_starts_attempt_2_and_publishes_the_request(
    env: Env,
) -> None:
    result = as_json(env.run("request", "deploy", "cli-failed", "--json"))

    assert env.status("cli-failed") == ("DEPLOYING", 2)
    assert (result["status"], result["attempt"]) == ("DEPLOYING", 2)
    [(headers, event)] = queued(env.redis, "pipeline.deploy")
    request = DeployRequestedEvent.model_validate(event)
    assert headers["id"] == event["event_id"] == result["follow_on"][0]["event_id"]
    assert headers["task"] == "pipeline.deploy"
    assert request.payload.image_group_id == "cli-failed"
    assert request.payload.attempt == 2
    assert [(i.role, i.image_name) for i in request.payload.images] == [
        ("compute", "compute.img"),
        ("login", "login-v2.img"),
    ]


def test_request_validate_of_a_deploying_group_is_refused_and_changes_nothing(env: Env) -> None:
    before = env.history_length("cli-deploying")

    result = env.main("request", "validate", "cli-deploying")

    assert result.returncode == 1
    assert result.stdout == ""
    assert "cannot move from DEPLOYING to VALIDATING" in result.stderr
    assert env.status("cli-deploying") == ("DEPLOYING", 1)
    assert env.history_length("cli-deploying") == before
    assert env.redis.llen("pipeline.validate") == 0


def test_cleanup_is_refused_while_a_stage_runs(env: Env) -> None:
    result = env.main("cleanup", "cli-deploying")

    assert result.returncode == 1
    assert "cannot move from DEPLOYING to CLEANED" in result.stderr
    assert env.status("cli-deploying") == ("DEPLOYING", 1)


def test_cleanup_of_a_built_group_cleans_it_once(env: Env) -> None:
    first = env.main("cleanup", "cli-built")
    second = env.main("cleanup", "cli-built")

    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("cli-built: CLEANED")
    assert env.status("cli-built") == ("CLEANED", 1)
    assert second.returncode == 1
    assert "cannot move from CLEANED to CLEANED" in second.stderr


# publish -------------------------------------------------------------------------------------


def test_publish_catalog_parsed_from_a_file_queues_a_valid_envelope(env: Env) -> None:
    job_id = str(uuid.uuid4())
    catalog = str(FIXTURES / "tiny_catalog.json")

    result = env.run("publish", "catalog-parsed", "--job-id", job_id, "--catalog", catalog)

    assert result.returncode == 0, result.stderr
    label, event_id = result.stdout.split()
    assert label == "event_id:"
    [(headers, event)] = [
        m for m in queued(env.redis, "imagegroups.events") if m[0]["id"] == event_id
    ]
    parsed = CatalogParsedEvent.model_validate(event)
    assert headers["task"] == CATALOG_PARSED.task
    assert str(parsed.event_id) == event_id
    assert str(parsed.job_id) == job_id
    assert parsed.payload.image_group_id == "tiny-cluster-v1"
    assert parsed.payload.roles == ["login_node_x86_64", "slurm_node_x86_64"]


# dead letters --------------------------------------------------------------------------------


def good_body() -> tuple[str, str]:
    event = outbox.catalog_parsed(str(uuid.uuid4()), f"dl-{uuid.uuid4().hex[:8]}", ["a"])
    return str(event["event_id"]), protocol_body([], {"event": event})


def test_dead_letters_list_and_show_print_the_stored_records(env: Env) -> None:
    event_id, body = good_body()
    letter_id = env.add_letter(body, event_id=event_id, attempts=3)
    listed = as_json(env.main("dead-letters", "list", "--json"))
    summary = {
        "id": letter_id,
        "task_name": "imagegroups.catalog_parsed",
        "event_id": event_id,
        "error_type": "DuplicateImageGroupError",
        "error_message": "image group 'x' is already held by job y",
        "attempts": 3,
        "status": "dead",
        "replay_of": None,
        "first_failed_at": iso(T0),
        "last_failed_at": iso(T0 + timedelta(seconds=30)),
    }

    shown = as_json(env.main("dead-letters", "show", str(letter_id), "--json"))

    assert [entry for entry in listed if entry["id"] == letter_id] == [summary]
    assert shown == summary | {
        "body": body,
        "traceback": "Traceback (most recent call last):\n  boom\n",
        "content_type": "application/json",
        "replayed_at": None,
        "replayed_as": [],
    }
    missing = env.early["letter-missing"]
    assert missing.returncode == 1
    assert "no dead letter with id 999999" in missing.stderr


def test_dead_letters_discard_marks_it_discarded_and_refuses_a_second_time(env: Env) -> None:
    letter_id = env.add_letter("not json at all")

    first = env.main("dead-letters", "discard", str(letter_id))
    second = env.main("dead-letters", "discard", str(letter_id))

    assert first.returncode == 0, first.stderr
    assert env.letter(letter_id).status is DeadLetterStatus.DISCARDED
    assert second.returncode == 1
    assert "discarded, not dead" in second.stderr


def test_dead_letters_replay_sends_good_bodies_again_and_reports_each_refusal(env: Env) -> None:
    event_id, body = good_body()
    good = env.add_letter(body, event_id=event_id)
    bad = env.add_letter("not json at all")

    result = env.run("dead-letters", "replay", str(good), str(bad), "--json")

    assert result.returncode == 1
    report = {entry["id"]: entry for entry in json.loads(result.stdout)}
    assert report[good]["replayed"] is True
    assert report[bad]["replayed"] is False
    assert "not JSON" in report[bad]["error"]
    assert env.letter(good).status is DeadLetterStatus.REPLAYED
    assert env.letter(good).replayed_at is not None
    assert env.letter(bad).status is DeadLetterStatus.DEAD
    sent = [m for m in queued(env.redis, "imagegroups.events") if m[1]["event_id"] == event_id]
    [(headers, event)] = sent
    assert "imagegroups_replay_of" not in headers, "lineage comes from the store, not a header"
    assert headers["id"] == report[good]["task_id"]
    CatalogParsedEvent.model_validate(event).to_command()


def test_dead_letters_replay_of_a_replayed_letter_is_refused_unless_forced(env: Env) -> None:
    event_id, body = good_body()
    letter_id = env.add_letter(body, event_id=event_id)
    assert env.run("dead-letters", "replay", str(letter_id)).returncode == 0

    again = env.run("dead-letters", "replay", str(letter_id))
    forced = env.run("dead-letters", "replay", str(letter_id), "--force")

    assert again.returncode == 1
    assert again.stdout == ""
    assert f"dead letter {letter_id} is replayed, not dead; add --force" in again.stderr
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.startswith(f"replayed {letter_id} (event_id {event_id}, task ")
    sent = [m for m in queued(env.redis, "imagegroups.events") if m[1]["event_id"] == event_id]
    assert len(sent) == 2  # the first replay and the forced one; the refused one sent nothing


def test_dead_letters_replay_all_sends_every_dead_letter(env: Env) -> None:
    event_id, body = good_body()
    good = env.add_letter(body, event_id=event_id)
    bad = env.add_letter("[1, 2]")
    with env.uow() as uow:
        dead = {letter.id for letter in uow.dead_letters.list(DeadLetterStatus.DEAD)}

    result = env.run("dead-letters", "replay", "--all", "--json")

    report = {entry["id"]: entry for entry in json.loads(result.stdout)}
    assert result.returncode == 1  # the bad body is refused, the others still go
    assert set(report) == dead
    assert report[good]["replayed"] is True
    assert report[bad]["replayed"] is False
    assert "not a Celery task body" in report[bad]["error"]
    assert env.letter(good).status is DeadLetterStatus.REPLAYED
    assert env.letter(bad).status is DeadLetterStatus.DEAD


# health ----------------------------------------------------------------------------------------


def test_health_is_healthy_with_database_and_broker_up(env: Env) -> None:
    report = as_json(env.early["health"])

    assert report["database"] == {"ok": True, "error": None}
    assert report["broker"] == {"ok": True, "error": None}
    assert report["healthy"] is True
    # Seeding sent nothing, so the follow-on requests of the seeded groups are still pending.
    assert report["outbox"]["pending"] >= 1
    assert report["outbox"]["oldest_unsent_age_seconds"] > 0
    assert report["dead_letters"] == {"waiting": 0}


def test_health_is_unhealthy_and_exits_1_when_the_broker_is_unreachable(env: Env) -> None:
    result = env.early["health-bad-broker"]

    report = json.loads(result.stdout)
    assert result.returncode == 1
    assert report["healthy"] is False
    assert report["broker"]["ok"] is False
    assert "Connection refused" in report["broker"]["error"]
    assert report["database"] == {"ok": True, "error": None}
