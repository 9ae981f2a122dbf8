"""What an operator reads, through `main(argv)` on real PostgreSQL: event text with control
characters is escaped in every human view and exact in JSON, every `--json` failure is one
JSON document, and dead letters can be told apart, filtered and traced through replays."""

from __future__ import annotations

import json
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

from domain import DeadLetter, DeadLetterStatus
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

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
#: Clears the screen, rings, returns the carriage and forges a line, then reverses the text.
CODE = "E\x1b[2J\x07"
SUMMARY = "disk full\r\nstatus          PASSED\x1b]0;owned\x07\u202edaolnwod"
RAW = ["\x1b", "\x07", "\r", "\u202e", "\x9b"]
GROUP = "hostile-text"


@dataclass
class Db:
    url: str
    engine: Engine
    letters: dict[str, int]


def _seed_group(engine: Engine) -> None:
    deps = handlers.Deps(
        lambda: SqlUnitOfWork(engine, FollowOns()),
        lambda: datetime.now(UTC),
        lambda: str(uuid.uuid4()),
    )
    job_id = str(uuid.uuid4())
    parsed = outbox.catalog_parsed(job_id, GROUP, ["compute"])
    handlers.handle_catalog_parsed(
        CatalogParsedEvent.model_validate(parsed).to_command(), deps=deps
    )
    for stage, outcome, code, summary in [
        ("build-image", "succeeded", None, None),
        ("deploy", "failed", CODE, SUMMARY),
    ]:
        event = outbox.stage_finished(
            job_id, stage, outcome, error_code=code, error_summary=summary
        )
        command = StageFinishedEvent.model_validate(event).to_command()
        handlers.handle_stage_finished(command, deps=deps)


def _letter(message: str, **fields: Any) -> DeadLetter:
    values: dict[str, Any] = {
        "id": None,
        "task_name": "imagegroups.stage_finished",
        "event_id": str(uuid.uuid4()),
        "body": "[[], {}, {}]",
        "content_type": "application/json",
        "error_type": "InvalidEventError",
        "error_message": message,
        "traceback": "Traceback (most recent call last):\n  boom\n",
        "attempts": 1,
        "status": DeadLetterStatus.DEAD,
        "first_failed_at": T0,
        "last_failed_at": T0,
    }
    return DeadLetter(**(values | fields))


def _seed_letters(engine: Engine) -> dict[str, int]:
    ids: dict[str, int] = {}
    with SqlUnitOfWork(engine) as uow:
        add = uow.dead_letters.add
        ids["stage"] = add(_letter("invalid StageFinishedEvent: payload.stage: Input should be …"))
        ids["hostile"] = add(
            _letter(
                f"invalid StageFinishedEvent: payload.error_summary {SUMMARY}",
                body=f'[[], {{"event": "{SUMMARY}"}}, {{}}]',
                traceback=f"Traceback (most recent call last):\nInvalidEventError: {SUMMARY}\n",
            )
        )
        ids["replayed"] = add(_letter("invalid StageFinishedEvent: payload.attempt: too big"))
        uow.dead_letters.set_status(ids["replayed"], DeadLetterStatus.REPLAYED, T0)
        ids["again"] = add(_letter("the replay failed again", replay_of=ids["replayed"]))
        ids["discarded"] = add(_letter("given up"))
        uow.dead_letters.set_status(ids["discarded"], DeadLetterStatus.DISCARDED, T0)
        uow.commit()
    return ids


@pytest.fixture(scope="module")
def db() -> Iterator[Db]:
    with fresh_database("cli_text") as url:
        upgrade(url)
        engine = make_engine(url)
        try:
            _seed_group(engine)
            letters = _seed_letters(engine)
            root.configure(Settings(database_url=url))
            yield Db(url, engine, letters)
        finally:
            root.configure(None)
            engine.dispose()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_escaped(text: str) -> None:
    assert not any(char in text for char in RAW), repr(text)


# Escaped in human views, exact in JSON ------------------------------------------------------


def test_status_escapes_the_failure_text_and_no_line_can_pass_for_a_field(
    db: Db, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "status", GROUP)

    assert code == 0
    assert_escaped(out)
    assert [line.split()[1] for line in out.splitlines() if line.startswith("status")] == ["FAILED"]
    assert "error_code      E\\x1b[2J\\x07" in out
    assert "disk full\\r\\nstatus          PASSED\\x1b]0;owned\\x07\\u202edaolnwod" in out


def test_status_json_keeps_the_failure_text_exactly_as_sent(
    db: Db, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "status", GROUP, "--json")

    assert code == 0
    failure = json.loads(out)["failure"]
    assert (failure["error_code"], failure["error_summary"]) == (CODE, SUMMARY)


@pytest.mark.parametrize("argv", [["list"], ["list", "--status", "failed"], ["history", GROUP]])
def test_list_and_history_escape_the_failure_text(
    db: Db, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, _ = run(capsys, *argv)

    assert code == 0
    assert_escaped(out)
    assert "E\\x1b[2J\\x07" in out


def test_dead_letters_list_and_show_escape_messages_bodies_and_tracebacks(
    db: Db, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile = str(db.letters["hostile"])
    _, listed, _ = run(capsys, "dead-letters", "list")
    code, shown, _ = run(capsys, "dead-letters", "show", hostile)

    assert code == 0
    assert_escaped(listed)
    assert_escaped(shown)
    [row] = [line for line in listed.splitlines() if line.startswith(f"{hostile} ")]
    assert row.endswith("…")  # one line, cut to the column
    body = shown.split("\nbody:\n", 1)[1].split("\n\ntraceback:\n")
    # A stored text keeps its own line breaks, each line indented under its heading, so no
    # line of it can pass for a field of the record.
    assert body[0].splitlines() == [
        '  [[], {"event": "disk full\\r',
        '  status          PASSED\\x1b]0;owned\\x07\\u202edaolnwod"}, {}]',
    ]
    assert body[1].splitlines() == [
        "  Traceback (most recent call last):",
        "  InvalidEventError: disk full\\r",
        "  status          PASSED\\x1b]0;owned\\x07\\u202edaolnwod",
    ]


def test_dead_letters_show_json_keeps_the_text_exact(
    db: Db, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "dead-letters", "show", str(db.letters["hostile"]), "--json")

    assert code == 0
    document = json.loads(out)
    assert document["error_message"].endswith(SUMMARY)
    assert document["body"] == f'[[], {{"event": "{SUMMARY}"}}, {{}}]'


# Every --json failure is one JSON document --------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["status", "no-such-group"], "no image group with id 'no-such-group'"),
        (["history", "no-such-group"], "no image group with id 'no-such-group'"),
        (["dead-letters", "show", "999999"], "no dead letter with id 999999"),
        (["dead-letters", "discard", "999999"], "refused 999999: no dead letter with id 999999"),
    ],
    ids=["status", "history", "dead-letters-show", "dead-letters-discard"],
)
def test_a_missing_id_under_json_prints_one_error_document_and_exits_1(
    db: Db, capsys: pytest.CaptureFixture[str], argv: list[str], error: str
) -> None:
    code, out, err = run(capsys, *argv, "--json")

    assert code == 1
    assert json.loads(out)["error"] == error
    assert err == f"imagegroups: error: {error}\n"


def test_an_unreachable_database_under_json_prints_one_error_document(
    db: Db, capsys: pytest.CaptureFixture[str]
) -> None:
    root.configure(Settings(database_url="postgresql+psycopg://postgres@127.0.0.1:1/none"))
    try:
        code, out, err = run(capsys, "list", "--json")
    finally:
        root.configure(Settings(database_url=db.url))

    assert code == 1
    document = json.loads(out)
    assert document["error"].startswith("database error: ")
    assert "Connection refused" in document["error"]
    assert document["error_type"] == "OperationalError"
    assert err.startswith("imagegroups: error: database error: ")


# Dead letters an operator can work through --------------------------------------------------


def test_list_shows_only_waiting_letters_with_the_reason_that_tells_them_apart(
    db: Db, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(capsys, "dead-letters", "list")

    rows = {int(line.split()[0]): line for line in out.splitlines()[2:]}
    assert set(rows) == {db.letters["stage"], db.letters["hostile"], db.letters["again"]}
    assert out.splitlines()[0].split()[-1] == "REASON"
    assert "payload.stage: Input should be" in rows[db.letters["stage"]]
    assert "payload.error_summary" in rows[db.letters["hostile"]]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("waiting", ["stage", "hostile", "again"]),
        ("replayed", ["replayed"]),
        ("discarded", ["discarded"]),
        ("all", ["stage", "hostile", "replayed", "again", "discarded"]),
    ],
)
def test_list_json_by_status_has_the_contract_fields(
    db: Db, capsys: pytest.CaptureFixture[str], status: str, expected: list[str]
) -> None:
    _, out, _ = run(capsys, "dead-letters", "list", "--status", status, "--json")

    listed = json.loads(out)
    assert [entry["id"] for entry in listed] == [db.letters[name] for name in expected]
    assert all({"status", "replay_of", "error_message", "event_id"} <= set(e) for e in listed)


def test_show_prints_the_lineage_both_ways(db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    replayed, again = db.letters["replayed"], db.letters["again"]

    _, first, _ = run(capsys, "dead-letters", "show", str(replayed))
    _, second, _ = run(capsys, "dead-letters", "show", str(again), "--json")

    assert f"replayed_as      {again}" in first
    assert "replay_of        -" in first
    document = json.loads(second)
    assert (document["replay_of"], document["replayed_as"]) == (replayed, [])


def test_replaying_a_replayed_letter_and_discarding_a_discarded_one_are_refused_alike(
    db: Db, capsys: pytest.CaptureFixture[str]
) -> None:
    replayed, discarded = db.letters["replayed"], db.letters["discarded"]

    replay = run(capsys, "dead-letters", "replay", str(replayed))
    discard = run(capsys, "dead-letters", "discard", str(discarded))

    assert (replay[0], discard[0]) == (1, 1)
    assert replay[2] == (
        f"imagegroups: error: refused {replayed}: dead letter {replayed} is replayed, not dead; "
        "add --force to send it again\n"
    )
    assert discard[2] == (
        f"imagegroups: error: refused {discarded}: dead letter {discarded} is discarded, not dead\n"
    )


# A read command loads neither Celery nor Alembic ------------------------------------------


def test_a_read_command_on_postgresql_imports_no_celery_kombu_or_alembic(db: Db) -> None:
    code = (
        "import json, sys\nfrom workers.cli.main import main\n"
        f"rc = main(['status', {GROUP!r}, '--json'])\n"
        "heavy = {m.split('.')[0] for m in sys.modules} & {'celery', 'kombu', 'alembic'}\n"
        "print(json.dumps([rc, sorted(heavy)]))"
    )
    env = {"DATABASE_URL": db.url, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [0, []]
