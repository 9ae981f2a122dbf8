"""What `dead-letters show` and `list --status` read, on every backend: the letters a replay
of a letter left behind (its "replayed as"), and the letters in one status."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from domain import DeadLetter, DeadLetterStatus
from persistence.uow import StoreUnitOfWork

NewUow = Callable[[], StoreUnitOfWork]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
EVENT = "5c8e7a40-3f1b-4d2a-9a6e-1f0b2c3d4e5f"


def _letter(body: str, replay_of: int | None = None) -> DeadLetter:
    return DeadLetter(
        id=None,
        task_name="imagegroups.stage_finished",
        event_id=EVENT,
        body=body,
        content_type="application/json",
        error_type="InvalidEventError",
        error_message="payload.stage: bogus",
        traceback=None,
        attempts=1,
        status=DeadLetterStatus.DEAD,
        first_failed_at=T0,
        last_failed_at=T0,
        replay_of=replay_of,
    )


def _add(new_uow: NewUow, letter: DeadLetter, status: DeadLetterStatus | None = None) -> int:
    with new_uow() as uow:
        letter_id = uow.dead_letters.add(letter)
        if status is not None:
            uow.dead_letters.set_status(letter_id, status, T0)
        uow.commit()
    return letter_id


def test_replays_of_a_letter_are_the_letters_that_name_it_as_replay_of(new_uow: NewUow) -> None:
    first = _add(new_uow, _letter("[[1], {}, {}]"), DeadLetterStatus.REPLAYED)
    again = _add(new_uow, _letter("[[2], {}, {}]", replay_of=first), DeadLetterStatus.REPLAYED)
    third = _add(new_uow, _letter("[[3], {}, {}]", replay_of=first))
    last = _add(new_uow, _letter("[[4], {}, {}]", replay_of=again))

    with new_uow() as uow:
        assert uow.dead_letters.replays_of(first) == [again, third]
        assert uow.dead_letters.replays_of(again) == [last]
        assert uow.dead_letters.replays_of(last) == []
        assert uow.dead_letters.replays_of(999_999) == []


def test_listing_by_status_keeps_only_the_letters_in_that_status(new_uow: NewUow) -> None:
    dead = _add(new_uow, _letter("[[1], {}, {}]"))
    replayed = _add(new_uow, _letter("[[2], {}, {}]"), DeadLetterStatus.REPLAYED)
    discarded = _add(new_uow, _letter("[[3], {}, {}]"), DeadLetterStatus.DISCARDED)

    with new_uow() as uow:
        by_status = {s: [d.id for d in uow.dead_letters.list(s)] for s in DeadLetterStatus}
        every = [d.id for d in uow.dead_letters.list()]

    assert by_status == {
        DeadLetterStatus.DEAD: [dead],
        DeadLetterStatus.REPLAYED: [replayed],
        DeadLetterStatus.DISCARDED: [discarded],
    }
    assert every == [dead, replayed, discarded]
