"""A dead letter always stores on PostgreSQL, whatever the bad message carried; one the
database refuses becomes a minimal letter, or, refused too, a CRITICAL line: it never loops."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text

from persistence.db import make_engine
from persistence.migrate import upgrade
from persistence.uow import SqlUnitOfWork
from tests.pg import fresh_database
from workers.edge import dead_letters

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine_url() -> Iterator[str]:
    with fresh_database("deadletter") as url:
        upgrade(url)
        yield url


def test_nul_lone_surrogates_and_overlong_names_are_stored_escaped(engine_url: str) -> None:
    engine = make_engine(engine_url)
    try:
        letter_id = dead_letters.store(
            lambda: SqlUnitOfWork(engine),
            task_name="t" * 300,
            event_id="\ud800-not-an-id",
            body='{"event": "a\x00b\ud800"}',
            content_type="application/json",
            exc=ValueError("bad \ud800 value\x00"),
            attempts=1,
            now=datetime.now(UTC),
        )
        assert letter_id is not None
        with SqlUnitOfWork(engine) as uow:
            letter = uow.dead_letters.get(letter_id)
    finally:
        engine.dispose()

    assert letter is not None
    assert letter.traceback is not None, "the full letter, not a minimal one"
    assert letter.task_name == "t" * 255
    assert letter.body == '{"event": "a\\x00b\\ud800"}'
    assert letter.error_message == "bad \\ud800 value\\x00"
    assert letter.event_id == "\\ud800-not-an-id"


def test_a_binary_body_is_kept_as_base64() -> None:
    assert dead_letters.body_text(b"\x80\x04pickle") == "base64:gARwaWNrbGU="
    assert dead_letters.body_text(b'{"ok": true}') == '{"ok": true}'


@contextmanager
def refusing_dead_letters(engine: Engine, when: str, errcode: str) -> Iterator[None]:
    """While open, PostgreSQL refuses each dead letter for which the SQL condition `when` on
    NEW holds, with the SQLSTATE condition `errcode` (as a constraint or a range check would)."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION refuse_letter() RETURNS trigger AS $$ BEGIN "
                f"IF {when} THEN RAISE EXCEPTION 'letter refused' USING ERRCODE = '{errcode}'; "
                "END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER refuse_letter BEFORE INSERT ON dead_letters "
                "FOR EACH ROW EXECUTE FUNCTION refuse_letter()"
            )
        )
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TRIGGER refuse_letter ON dead_letters"))
            conn.execute(text("DROP FUNCTION refuse_letter()"))


def _store(engine: Engine, event_id: str) -> int | None:
    return dead_letters.store(
        lambda: SqlUnitOfWork(engine),
        task_name="imagegroups.stage_finished",
        event_id=event_id,
        body=f'[[], {{"event": {{"event_id": "{event_id}"}}}}, {{}}]',
        content_type="application/json",
        exc=ValueError("invalid"),
        attempts=3,
        now=datetime.now(UTC),
    )


def test_a_letter_postgresql_refuses_is_stored_as_a_minimal_one(engine_url: str) -> None:
    engine = make_engine(engine_url)
    try:
        with refusing_dead_letters(engine, "NEW.traceback IS NOT NULL", "foreign_key_violation"):
            letter_id = _store(engine, "3f1b0c9e-4d7a-4e1e-9a51-8a1f2f0c0d11")
        assert letter_id is not None
        with SqlUnitOfWork(engine) as uow:
            letter = uow.dead_letters.get(letter_id)
    finally:
        engine.dispose()
    assert letter is not None
    assert (letter.event_id, letter.traceback, letter.replay_of) == (
        "3f1b0c9e-4d7a-4e1e-9a51-8a1f2f0c0d11",
        None,
        None,
    )
    assert "IntegrityError" in letter.error_message


def test_a_message_postgresql_refuses_every_letter_of_is_given_up_after_two_tries(
    engine_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(engine_url)
    event_id = "5a0c3d2e-1b4f-4c6a-8d9e-0f1a2b3c4d5e"
    try:
        with (
            refusing_dead_letters(engine, "true", "numeric_value_out_of_range"),
            caplog.at_level(logging.CRITICAL, logger="workers.edge.dead_letters"),
        ):
            letter_id = _store(engine, event_id)
        with SqlUnitOfWork(engine) as uow:
            stored = [d for d in uow.dead_letters.list() if d.event_id == event_id]
    finally:
        engine.dispose()
    assert (letter_id, stored) == (None, [])
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert event_id in line and "given up" in line
