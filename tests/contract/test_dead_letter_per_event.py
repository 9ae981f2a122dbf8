"""One dead letter per waiting message (copies of it merge), and which letter of an event was
replayed last (the lineage of a replay that fails again), on every backend."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from domain import DeadLetter, DeadLetterStatus
from persistence.uow import StoreUnitOfWork

NewUow = Callable[[], StoreUnitOfWork]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
EVENT = "9b2f1c1e-6f0a-4c44-9e57-0d8f4b1a2c33"


def _letter(
    event_id: str | None, attempts: int, at: datetime, error: str, body: str = "[[], {}, {}]"
) -> DeadLetter:
    return DeadLetter(
        id=None,
        task_name="imagegroups.stage_finished",
        event_id=event_id,
        body=body,
        content_type="application/json",
        error_type=error,
        error_message=f"{error} happened",
        traceback=None,
        attempts=attempts,
        status=DeadLetterStatus.DEAD,
        first_failed_at=at,
        last_failed_at=at,
    )


def _add(new_uow: NewUow, letter: DeadLetter) -> int:
    with new_uow() as uow:
        letter_id = uow.dead_letters.add(letter)
        uow.commit()
    return letter_id


def test_a_copy_of_a_waiting_message_failing_again_updates_its_letter(new_uow: NewUow) -> None:
    first = _add(new_uow, _letter(EVENT, 8, T0, "CatalogNotParsedError"))
    later = T0 + timedelta(seconds=5)
    again = _add(new_uow, _letter(EVENT, 9, later, "AttemptsExhaustedError"))
    assert again == first
    with new_uow() as uow:
        [letter] = uow.dead_letters.list()
    assert (letter.attempts, letter.error_type) == (9, "AttemptsExhaustedError")
    assert (letter.first_failed_at, letter.last_failed_at) == (T0, later)


def test_a_replayed_event_that_fails_again_gets_a_new_letter(new_uow: NewUow) -> None:
    first = _add(new_uow, _letter(EVENT, 8, T0, "CatalogNotParsedError"))
    with new_uow() as uow:
        uow.dead_letters.set_status(first, DeadLetterStatus.REPLAYED, T0)
        uow.commit()
    again = _add(new_uow, replace(_letter(EVENT, 1, T0, "DomainError"), replay_of=first))
    assert again != first
    with new_uow() as uow:
        assert [d.status for d in uow.dead_letters.list()] == ["replayed", "dead"]


def test_messages_without_an_event_id_each_keep_their_own_letter(new_uow: NewUow) -> None:
    ids = {_add(new_uow, _letter(None, 1, T0, "UndecodableMessageError")) for _ in range(3)}
    assert len(ids) == 3


def test_another_message_under_the_same_event_id_keeps_a_letter_of_its_own(
    new_uow: NewUow,
) -> None:
    first = _add(new_uow, _letter(EVENT, 1, T0, "InvalidEventError", body="[[], {}, {}]"))
    other = _add(new_uow, _letter(EVENT, 1, T0, "InvalidEventError", body="[[1], {}, {}]"))
    assert first != other
    with new_uow() as uow:
        assert len(uow.dead_letters.list()) == 2


def _replayed(new_uow: NewUow, letter_id: int, at: datetime) -> None:
    with new_uow() as uow:
        uow.dead_letters.set_status(letter_id, DeadLetterStatus.REPLAYED, at)
        uow.commit()


def test_the_latest_replayed_letter_of_an_event_is_the_one_replayed_last(new_uow: NewUow) -> None:
    first = _add(new_uow, _letter(EVENT, 1, T0, "InvalidEventError", body="[[1], {}, {}]"))
    second = _add(new_uow, _letter(EVENT, 1, T0, "InvalidEventError", body="[[2], {}, {}]"))
    other = _add(new_uow, _letter(str(uuid.uuid4()), 1, T0, "InvalidEventError"))
    with new_uow() as uow:
        assert uow.dead_letters.latest_replayed(EVENT) is None, "a dead letter is not replayed"
    _replayed(new_uow, second, T0 + timedelta(seconds=1))
    _replayed(new_uow, first, T0 + timedelta(seconds=2))
    _replayed(new_uow, other, T0 + timedelta(seconds=3))
    with new_uow() as uow:
        assert uow.dead_letters.latest_replayed(EVENT) == first
        assert uow.dead_letters.latest_replayed(str(uuid.uuid4())) is None


def test_a_discarded_letter_is_no_replay_and_a_replay_is_seen_in_its_own_unit_of_work(
    new_uow: NewUow,
) -> None:
    discarded = _add(new_uow, _letter(EVENT, 1, T0, "InvalidEventError"))
    with new_uow() as uow:
        uow.dead_letters.set_status(discarded, DeadLetterStatus.DISCARDED, T0)
        uow.commit()
    with new_uow() as uow:
        assert uow.dead_letters.latest_replayed(EVENT) is None
        replayed = uow.dead_letters.add(_letter(EVENT, 1, T0, "InvalidEventError", body="[]"))
        uow.dead_letters.set_status(replayed, DeadLetterStatus.REPLAYED, T0)
        assert uow.dead_letters.latest_replayed(EVENT) == replayed
