"""The schema as the CLI sees it: `db` commands, and a database missing or never migrated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool

from persistence.db import make_engine
from persistence.migrate import heads, schema_state, upgrade
from tests.pg import fresh_database

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).with_name("imagegroups"))
HEAD = heads()[0]
#: Every command that reads or writes the database, run with arguments that pass argparse.
DATABASE_COMMANDS = [
    ["status", "g1"],
    ["status", "g1", "--json"],
    ["list"],
    ["history", "g1", "--json"],
    ["request", "deploy", "g1"],
    ["cleanup", "g1"],
    ["dead-letters", "list"],
    ["dead-letters", "show", "1"],
    ["dead-letters", "discard", "1"],
]
UPGRADE_FIX = "run: imagegroups db upgrade"


def run_cli(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The command with only `env` configured: no DATABASE_URL unless given."""
    settings = ("DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")
    environment = {
        k: v for k, v in os.environ.items() if k not in settings and not k.startswith("IMAGEGROUPS")
    }
    return subprocess.run(
        [CLI, *argv], env=environment | env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def assert_only_the_error_on_stdout(
    done: subprocess.CompletedProcess[str], argv: list[str]
) -> None:
    """Nothing on stdout but, under --json, the one JSON document saying what stderr says."""
    if "--json" not in argv:
        assert done.stdout == ""
        return
    document = json.loads(done.stdout)
    assert document["error_type"] == "CommandError"
    assert done.stderr == f"imagegroups: error: {document['error']}\n"


@pytest.fixture
def empty_database() -> Iterator[str]:
    with fresh_database("schema") as url:
        yield url


def tables(url: str) -> set[str]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


# db upgrade / current / history / downgrade -----------------------------------------------


def test_db_commands_take_the_schema_to_base_and_back_to_head(
    empty_database: str, tmp_path: Path
) -> None:
    def db(*argv: str) -> str:
        done = run_cli(["db", *argv], tmp_path, DATABASE_URL=empty_database)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert db("current").startswith("none (no schema")
    assert db("upgrade") == f"database is at head ({HEAD})\n"
    assert db("current") == f"{HEAD} (head)\n"
    assert "image_groups" in tables(empty_database)

    assert db("downgrade", "base") == "database is at none\n"
    assert db("current").startswith("none (no schema; run: imagegroups db upgrade)")
    assert tables(empty_database) == {"alembic_version"}

    assert db("upgrade") == f"database is at head ({HEAD})\n"
    assert db("current") == f"{HEAD} (head)\n"
    assert "image_groups" in tables(empty_database)


def test_db_downgrade_to_one_revision_leaves_the_schema_behind_head(
    empty_database: str, tmp_path: Path
) -> None:
    upgrade(empty_database)

    down = run_cli(["db", "downgrade", "0001"], tmp_path, DATABASE_URL=empty_database)
    current = run_cli(["db", "current"], tmp_path, DATABASE_URL=empty_database)

    assert down.stdout == "database is at 0001\n", down.stderr
    assert current.stdout == f"0001 (behind head {HEAD}; run: imagegroups db upgrade)\n"


def test_db_downgrade_to_an_unknown_revision_exits_1_and_changes_nothing(
    empty_database: str, tmp_path: Path
) -> None:
    upgrade(empty_database)

    done = run_cli(["db", "downgrade", "nope"], tmp_path, DATABASE_URL=empty_database)

    assert done.returncode == 1
    assert "cannot downgrade to 'nope'" in done.stderr
    assert "Traceback" not in done.stderr
    engine = make_engine(empty_database)
    try:
        assert schema_state(engine) == "current"
    finally:
        engine.dispose()


def test_db_history_lists_every_revision_newest_first_with_the_head_marked(
    tmp_path: Path,
) -> None:
    done = run_cli(["db", "history"], tmp_path)

    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr
    assert lines[0].split()[:3] == ["REVISION", "PARENT", "DESCRIPTION"]
    assert lines[2].startswith(f"{HEAD} (head)")
    assert lines[-1].split()[:2] == ["0001", "base"]
    assert not list(tmp_path.iterdir()), "history needs no database"


# a database that was never migrated, or is behind ----------------------------------------


@pytest.mark.parametrize("argv", DATABASE_COMMANDS, ids=" ".join)
def test_a_command_on_a_database_never_migrated_says_so_with_the_fix(
    argv: list[str], empty_database: str, tmp_path: Path
) -> None:
    done = run_cli(argv, tmp_path, DATABASE_URL=empty_database)

    assert done.returncode == 1
    assert_only_the_error_on_stdout(done, argv)
    assert "has no schema: it was never migrated" in done.stderr
    assert UPGRADE_FIX in done.stderr
    assert "does not exist" not in done.stderr
    assert tables(empty_database) == set(), "the check must not create anything"


def test_a_command_on_a_schema_behind_head_names_both_revisions(
    empty_database: str, tmp_path: Path
) -> None:
    upgrade(empty_database, "0001")

    done = run_cli(["list", "--json"], tmp_path, DATABASE_URL=empty_database)

    assert done.returncode == 1
    assert f"schema is at revision 0001, behind {HEAD}; {UPGRADE_FIX}" in done.stderr


def test_a_command_on_a_schema_from_a_newer_version_says_so(
    empty_database: str, tmp_path: Path
) -> None:
    upgrade(empty_database)
    engine = make_engine(empty_database)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        assert schema_state(engine) == "unknown"
    finally:
        engine.dispose()

    done = run_cli(["status", "g1"], tmp_path, DATABASE_URL=empty_database)

    assert done.returncode == 1
    assert "at revision 9999, which this version does not know" in done.stderr


def test_schema_state_tells_missing_behind_and_current_apart(empty_database: str) -> None:
    engine = make_engine(empty_database)
    try:
        states = [schema_state(engine)]
        upgrade(empty_database, "0001")
        states.append(schema_state(engine))
        upgrade(empty_database)
        states.append(schema_state(engine))
    finally:
        engine.dispose()

    assert states == ["missing", "behind", "current"]


# no database at all (SQLite) ---------------------------------------------------------------


@pytest.mark.parametrize("argv", [*DATABASE_COMMANDS, ["db", "current"]], ids=" ".join)
def test_a_command_without_database_url_creates_no_sqlite_file_and_says_how_to_get_one(
    argv: list[str], tmp_path: Path
) -> None:
    done = run_cli(argv, tmp_path)

    assert done.returncode == 1
    assert_only_the_error_on_stdout(done, argv)
    assert f"no database exists at {tmp_path / 'imagegroups.db'}" in done.stderr
    assert "DATABASE_URL is not set" in done.stderr
    assert "imagegroups db upgrade" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_sqlite_database_url_naming_a_missing_file_is_reported_not_created(
    tmp_path: Path,
) -> None:
    done = run_cli(["list"], tmp_path, DATABASE_URL="sqlite:///elsewhere.db")

    assert done.returncode == 1
    assert f"no database exists at {tmp_path / 'elsewhere.db'}" in done.stderr
    assert "(DATABASE_URL=sqlite:///elsewhere.db). Check DATABASE_URL" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_after_db_upgrade_the_default_sqlite_database_answers_reads(tmp_path: Path) -> None:
    created = run_cli(["db", "upgrade"], tmp_path)
    listed = run_cli(["list", "--json"], tmp_path)
    missing = run_cli(["status", "g1"], tmp_path)

    assert created.returncode == 0, created.stderr
    assert (tmp_path / "imagegroups.db").exists()
    assert listed.returncode == 0, listed.stderr
    assert '"total": 0' in listed.stdout
    assert missing.returncode == 1
    assert "no image group with id 'g1'" in missing.stderr
