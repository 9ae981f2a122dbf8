"""A dead letter always stores on PostgreSQL, whatever the bad message carried."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from persistence.db import make_engine
from persistence.migrate import upgrade
from persistence.uow import SqlUnitOfWork
from tests.pg import fresh_database
from workers import dead_letters

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
        with SqlUnitOfWork(engine) as uow:
            letter = uow.dead_letters.get(letter_id)
    finally:
        engine.dispose()

    assert letter is not None
    assert letter.task_name == "t" * 255
    assert letter.body == '{"event": "a\\x00b\\ud800"}'
    assert letter.error_message == "bad \\ud800 value\\x00"
    assert letter.event_id == "\\ud800-not-an-id"


def test_a_binary_body_is_kept_as_base64() -> None:
    assert dead_letters.body_text(b"\x80\x04pickle") == "base64:gARwaWNrbGU="
    assert dead_letters.body_text(b'{"ok": true}') == '{"ok": true}'
