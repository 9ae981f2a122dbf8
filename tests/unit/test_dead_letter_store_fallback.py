"""Storing a dead letter always ends: a letter the database refuses becomes a minimal one, one
that cannot be stored at all is given up with a CRITICAL line, and only an outage is waited on.
Replay lineage comes from the store."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from sqlalchemy.exc import DataError, IntegrityError, OperationalError, ProgrammingError

from domain import DeadLetter, DeadLetterStatus
from persistence.memory import MemoryState, MemoryUnitOfWork
from persistence.uow import StoreUnitOfWork
from workers.edge import dead_letters

NOW = datetime(2026, 1, 1, tzinfo=UTC)
EVENT = str(uuid.uuid4())
Refusal = Callable[[DeadLetter], BaseException | None]


class _RefusingLetters:
    """The memory repository, refusing the letters `refuse` names as a database would."""

    def __init__(self, inner: Any, refuse: Refusal, tries: list[DeadLetter]) -> None:
        self.inner, self.refuse, self.tries = inner, refuse, tries

    def add(self, letter: DeadLetter) -> int:
        self.tries.append(letter)
        error = self.refuse(letter)
        if error is not None:
            raise error
        return int(self.inner.add(letter))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _store_with(
    state: MemoryState, refuse: Refusal, tries: list[DeadLetter] | None = None, **overrides: Any
) -> int | None:
    seen = [] if tries is None else tries

    def new_uow() -> StoreUnitOfWork:
        uow = MemoryUnitOfWork(state)
        begin = uow._begin

        def refusing_begin() -> None:
            begin()
            uow.dead_letters = _RefusingLetters(uow.dead_letters, refuse, seen)

        uow._begin = refusing_begin  # type: ignore[method-assign]
        return uow

    call: dict[str, Any] = {
        "task_name": "imagegroups.stage_finished",
        "event_id": EVENT,
        "body": '[[], {"event": {}}, {}]',
        "content_type": "application/json",
        "exc": ValueError("the event is invalid"),
        "attempts": 1,
        "now": NOW,
    }
    return dead_letters.store(new_uow, **(call | overrides))


def _refused(kind: type[Exception]) -> Exception:
    return kind("INSERT INTO dead_letters", {}, Exception("refused"))


def _stored(state: MemoryState) -> list[DeadLetter]:
    with MemoryUnitOfWork(state) as uow:
        return uow.dead_letters.list()


@pytest.mark.parametrize("kind", [IntegrityError, DataError])
def test_a_letter_the_database_refuses_is_stored_as_a_minimal_letter(
    kind: type[Exception],
) -> None:
    state = MemoryState()
    letter_id = _store_with(state, lambda d: _refused(kind) if d.traceback is not None else None)
    [letter] = _stored(state)
    assert letter.id == letter_id
    assert (letter.event_id, letter.body, letter.error_type) == (
        EVENT,
        '[[], {"event": {}}, {}]',
        "ValueError",
    )
    assert (letter.traceback, letter.replay_of) == (None, None)
    assert letter.error_message.startswith("the event is invalid")
    assert kind.__name__ in letter.error_message


def test_a_minimal_letter_cuts_a_long_error_and_clamps_its_attempts() -> None:
    state = MemoryState()
    _store_with(
        state,
        lambda d: _refused(DataError) if d.traceback is not None else None,
        exc=ValueError("x" * 100_000),
        attempts=2**40,
    )
    [letter] = _stored(state)
    assert len(letter.error_message) < 2100
    assert letter.attempts == 2**31 - 1


def test_a_message_not_even_a_minimal_letter_of_which_stores_is_given_up_with_a_critical_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state, tries = MemoryState(), list[DeadLetter]()
    with caplog.at_level(logging.CRITICAL, logger="workers.edge.dead_letters"):
        letter_id = _store_with(state, lambda d: _refused(IntegrityError), tries, body="[1, 2, 3]")
    assert letter_id is None
    assert len(tries) == 2, "the full letter, then the minimal one: no more"
    assert _stored(state) == []
    [line] = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert EVENT in line.getMessage() and "[1, 2, 3]" in line.getMessage()
    assert "given up" in line.getMessage()


@pytest.mark.parametrize("full_letter", ["refused", "transient"])
def test_a_transient_store_failure_is_raised_so_the_message_waits_for_the_database(
    full_letter: str,
) -> None:
    outage = OperationalError("INSERT INTO dead_letters", {}, Exception("connection refused"))

    def refuse(letter: DeadLetter) -> Exception:
        # The database may go away between the full letter and the minimal one.
        return _refused(IntegrityError) if full_letter == "refused" and letter.traceback else outage

    with pytest.raises(OperationalError):
        _store_with(MemoryState(), refuse)


def test_a_letter_names_the_events_letter_replayed_last_as_its_replay_of() -> None:
    state = MemoryState()
    first = _store_with(state, lambda d: None)
    assert first is not None
    with MemoryUnitOfWork(state) as uow:
        uow.dead_letters.set_status(first, DeadLetterStatus.REPLAYED, NOW)
        uow.commit()
    again = _store_with(state, lambda d: None)
    other = _store_with(state, lambda d: None, event_id=str(uuid.uuid4()))
    letters = {d.id: d for d in _stored(state)}
    assert again is not None and other is not None
    assert (letters[first].replay_of, letters[again].replay_of) == (None, first)
    assert letters[other].replay_of is None, "lineage follows the event_id only"


@pytest.mark.parametrize(
    ("sqlstate", "why"),
    [("42501", "permission denied"), ("42P01", "relation does not exist")],
)
def test_a_store_the_operator_broke_is_waited_on_like_an_outage_never_given_up(
    sqlstate: str, why: str
) -> None:
    class Broken(psycopg.errors.ProgrammingError):
        pass

    Broken.sqlstate = sqlstate
    failure = ProgrammingError("INSERT INTO dead_letters", {}, Broken(why))
    state, tries = MemoryState(), list[DeadLetter]()
    with pytest.raises(ProgrammingError):
        _store_with(state, lambda d: failure, tries)
    assert len(tries) == 1, "no minimal letter: the store is broken, not the letter"
    assert not dead_letters.refuses_the_letter(failure)


def test_only_a_value_or_constraint_refusal_counts_as_the_letters_fault() -> None:
    check = psycopg.errors.CheckViolation("new row violates check constraint")
    assert dead_letters.refuses_the_letter(check)
    assert dead_letters.refuses_the_letter(TypeError("a bug building the letter"))
    assert not dead_letters.refuses_the_letter(ConnectionResetError("reset by peer"))
