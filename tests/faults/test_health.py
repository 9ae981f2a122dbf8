"""`imagegroups health` is unhealthy, with the reason, when dead letters cannot be kept or wait."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tests.faults.checks import letters_for
from tests.faults.messages import envelope, push, task_headers
from tests.integration.stack import Stack, stack, wait_for

pytestmark = pytest.mark.faults


@contextmanager
def worker_role(s: Stack) -> Iterator[tuple[str, str]]:
    """A login role with the worker's privileges; yields (role, its DATABASE_URL)."""
    role = f"ig_worker_{uuid.uuid4().hex[:10]}"
    url = make_url(s.database_url)
    admin = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        conn.execute(text(f'GRANT USAGE ON SCHEMA public TO "{role}"'))
        conn.execute(
            text(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"')
        )
        conn.execute(text(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{role}"'))
    try:
        yield role, url.set(username=role).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))
        admin.dispose()


def _grant(s: Stack, sql: str) -> None:
    with s.engine.connect() as conn:
        conn.execute(text(sql))
        conn.commit()


def _health(s: Stack) -> tuple[int, dict[str, Any]]:
    done: subprocess.CompletedProcess[str] = s.run_cli("health", "--json", check=False)
    return done.returncode, json.loads(done.stdout)


def test_health_fails_with_the_reason_while_a_worker_cannot_store_dead_letters(
    tmp_path: Path,
) -> None:
    with stack(tmp_path, "dlhealth") as s, worker_role(s) as (role, worker_url):
        _grant(s, f'REVOKE INSERT ON dead_letters FROM "{role}"')
        worker = s.start_worker("--concurrency", "1", DATABASE_URL=worker_url)
        code, report = _health(s)
        assert (code, report["healthy"], report["problems"]) == (0, True, [])
        assert [w["dead_letter_store"]["ok"] for w in report["workers"]] == [True]

        marker = str(uuid.uuid4())
        bad = envelope(f"not json {marker}".encode(), task_headers("imagegroups.stage_finished"))
        push(s.redis, bad)
        wait_for(
            lambda: "could not dead-letter" in worker.output(),
            timeout=20,
            what="the dead-letter store to fail",
        )
        code, report = _health(s)
        assert code == 1 and report["healthy"] is False
        [problem] = report["problems"]
        assert "cannot store dead letters" in problem and "permission denied" in problem, problem
        [state] = report["workers"]
        assert state["dead_letter_store"]["held_messages"] == 1

        _grant(s, f'GRANT INSERT ON dead_letters TO "{role}"')
        [letter] = wait_for(lambda: letters_for(s, marker), timeout=60, what="the dead letter")
        code, report = _health(s)
        assert code == 1
        assert report["problems"] == [
            "1 dead letter(s) waiting: see `imagegroups dead-letters list`, fix the cause, "
            "then replay or discard them"
        ]

        s.run_cli("dead-letters", "discard", str(letter.id))
        code, report = _health(s)
        assert (code, report["healthy"], report["problems"]) == (0, True, [])
        assert report["workers"][0]["dead_letter_store"] == {
            "ok": True,
            "error": None,
            "failing_since": None,
            "held_messages": 0,
        }
