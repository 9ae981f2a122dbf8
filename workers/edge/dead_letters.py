"""The dead-letter store's service side: keep a failed message whole, and send it again."""

from __future__ import annotations

import base64
import json
import logging
import traceback
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from domain import DeadLetter, DeadLetterStatus
from persistence import models
from persistence.uow import StoreUnitOfWork
from workers.errors import is_transient
from workers.runtime import root

log = logging.getLogger(__name__)

_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def protocol_body(args: Any, kwargs: Any) -> str:
    """The Celery protocol-2 body [args, kwargs, embed] the task was called with, as JSON."""
    return json.dumps([list(args), dict(kwargs), _EMBED], default=str)


#: The `attempts` column is a 32-bit integer; a minimal letter's error text is cut to this.
_MAX_STORED_INT = 2**31 - 1
_MINIMAL_ERROR_CHARS = 2000
#: How much of a message that could not be stored at all its CRITICAL log line keeps.
_LOGGED_BODY_CHARS = 65536


def store(
    new_uow: Callable[[], StoreUnitOfWork],
    *,
    task_name: str,
    event_id: str | None,
    body: str,
    content_type: str | None,
    exc: BaseException,
    attempts: int,
    now: datetime,
) -> int | None:
    """Store the letter and return its id; None once no letter of it can be stored at all.

    A failure of the store itself (the database is down, a permission or a table missing) is
    raised: the caller keeps the message and tries again, and `health` names the failure, so
    nothing is lost while the store is away or misconfigured. A failure caused by the letter
    (a constraint or a value the database refuses) would repeat on every try: a minimal
    letter is stored instead, and if even that is refused the message is given up
    (`_give_up`). `replay_of` comes from the store, never from the message.
    """
    try:
        return _add(new_uow, _letter(task_name, event_id, body, content_type, exc, attempts, now))
    except Exception as failure:
        if not refuses_the_letter(failure):
            raise
        refused: Exception = failure
    log.error(
        "event_id=%s task=%s: its dead letter cannot be stored (%s); storing a minimal one",
        event_id,
        task_name,
        f"{type(refused).__name__}: {refused}",
    )
    minimal = _minimal(task_name, event_id, body, content_type, exc, attempts, now, refused)
    try:
        return _add(new_uow, minimal, lineage=False)
    except Exception as failure:
        if not refuses_the_letter(failure):
            raise
        _give_up(minimal, failure)
        return None


def refuses_the_letter(exc: BaseException) -> bool:
    """Whether the database refused this letter (SQLSTATE class 22, a value; 23, a
    constraint), or building it failed, rather than the store being unavailable: only such a
    failure repeats whatever the operator does, so only it may end in a minimal letter."""
    if is_transient(exc):
        return False
    if isinstance(exc, DataError | IntegrityError):
        return True
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(cause, psycopg.Error):
        return (cause.sqlstate or "")[:2] in ("22", "23")
    return not isinstance(exc, DBAPIError | OSError)


def _letter(
    task_name: str,
    event_id: str | None,
    body: str,
    content_type: str | None,
    exc: BaseException,
    attempts: int,
    now: datetime,
) -> DeadLetter:
    return DeadLetter(
        id=None,
        task_name=_text(task_name, 255),
        event_id=None if event_id is None else _text(event_id, 64),
        body=_text(body),
        content_type=None if content_type is None else _text(content_type, 128),
        error_type=_text(type(exc).__name__, 128),
        error_message=_text(str(exc)),
        traceback=_text("".join(traceback.format_exception(exc))),
        attempts=min(max(attempts, 0), _MAX_STORED_INT),
        status=DeadLetterStatus.DEAD,
        first_failed_at=now,
        last_failed_at=now,
    )


def _minimal(
    task_name: object,
    event_id: object,
    body: object,
    content_type: object,
    exc: BaseException,
    attempts: object,
    now: datetime,
    refused: Exception,
) -> DeadLetter:
    """What surely stores: each field within its column, no lineage, no traceback, no lookup.
    The body stays whole, as received: without it the letter could not be replayed."""
    error = str(exc)[:_MINIMAL_ERROR_CHARS]
    return DeadLetter(
        id=None,
        task_name=_text(str(task_name), 255),
        event_id=_text(event_id, 64) if isinstance(event_id, str) else None,
        body=_text(body if isinstance(body, str) else repr(body)),
        content_type=content_type[:128] if isinstance(content_type, str) else None,
        error_type=_text(type(exc).__name__, 128),
        error_message=_text(f"{error} (the full letter was refused: {type(refused).__name__})"),
        traceback=None,
        attempts=min(max(attempts, 0), _MAX_STORED_INT) if isinstance(attempts, int) else 1,
        status=DeadLetterStatus.DEAD,
        first_failed_at=now,
        last_failed_at=now,
    )


def _add(
    new_uow: Callable[[], StoreUnitOfWork], letter: DeadLetter, *, lineage: bool = True
) -> int:
    event_id = letter.event_id
    with new_uow() as uow:
        if lineage and event_id is not None:
            # The letter this delivery was replayed from, if it was (same event_id).
            letter = replace(letter, replay_of=uow.dead_letters.latest_replayed(event_id))
            if letter.attempts > 1:
                # Deliveries after the first are counted; the first counted one followed the
                # first failure, so its time is when this event first failed.
                first = uow.deliveries.first_counted_at(event_id)
                letter = replace(letter, first_failed_at=first or letter.first_failed_at)
        letter_id = uow.dead_letters.add(letter)
        uow.commit()
    root.state().counting.recorder.dead_letter(letter.error_type)
    return letter_id


def _give_up(letter: DeadLetter, failure: Exception) -> None:
    """The end of a message not even a minimal letter of which stores.

    Such a failure is not transient, so it would recur on every try: retrying would hold the
    message (and a prefetch slot) for ever, which is how a bad letter used to wedge its event.
    It is given up after these two tries, and this log line, with the body, is its record (an
    operator can publish it again from here).
    """
    log.critical(
        "event_id=%s task=%s: no dead letter of it could be stored (%s: %s); the message is "
        "given up. It failed with %s; its body (first %d characters): %s",
        letter.event_id,
        letter.task_name,
        type(failure).__name__,
        failure,
        letter.error_message,
        _LOGGED_BODY_CHARS,
        letter.body[:_LOGGED_BODY_CHARS],
    )


def _text(value: str, limit: int | None = None) -> str:
    """Text any database stores: no NUL, no lone surrogates, within the column's length.

    A dead letter must never fail to store because of what the bad message contained.
    """
    clean = models.storable_text(value)
    return clean if limit is None else clean[:limit]


def body_text(raw: object) -> str:
    """A message body as text: UTF-8 as is, anything else (pickle, binary) as base64.

    Whatever the body is (even none at all), this returns text: a dead letter must never fail
    to be stored because of what the bad message held."""
    if raw is None:
        return ""
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, bytes | bytearray | memoryview):
        return repr(raw)
    raw = bytes(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        return "base64:" + base64.b64encode(raw).decode("ascii")
    return text


class ReplayRefusedError(Exception):
    """The dead letter cannot be sent again as it is (not dead, or not a decodable task)."""


def decode_call(letter: DeadLetter) -> tuple[list[Any], dict[str, Any]]:
    """The args and kwargs of the stored call; refuse bodies that never were a JSON task."""
    if letter.content_type not in (None, "application/json"):
        raise ReplayRefusedError(
            f"dead letter {letter.id} has content type {letter.content_type}; "
            "only JSON task messages can be replayed (discard it instead)"
        )
    try:
        decoded = json.loads(letter.body)
    except ValueError:
        raise ReplayRefusedError(
            f"dead letter {letter.id} body is not JSON; it cannot be replayed (discard it)"
        ) from None
    if (
        not isinstance(decoded, list)
        or len(decoded) != 3
        or not isinstance(decoded[0], list)
        or not isinstance(decoded[1], dict)
    ):
        raise ReplayRefusedError(
            f"dead letter {letter.id} body is not a Celery task body [args, kwargs, embed]"
        )
    return decoded[0], decoded[1]


def replay(
    letter_id: int,
    *,
    new_uow: Callable[[], StoreUnitOfWork],
    send: Callable[[str, list[Any], dict[str, Any]], str],
    now: datetime,
) -> tuple[DeadLetter, str]:
    """Send the stored call again (same event_id), mark the letter replayed; return the task id.

    A letter already replayed may be replayed again: the inbox makes the repeat a duplicate.
    """
    with new_uow() as uow:
        letter = _get(uow, letter_id, DeadLetterStatus.DEAD, DeadLetterStatus.REPLAYED)
        args, kwargs = decode_call(letter)
        if letter.event_id is not None:
            # A fresh count of deliveries: the replay must not inherit the exhausted budget.
            uow.deliveries.reset(letter.event_id)
        uow.commit()
    # Send first, then mark: if marking fails the letter stays "dead" and a second replay
    # is a duplicate the inbox absorbs; the other order could lose the replay.
    # No header names the letter: the worker finds the lineage of a replay that fails again in
    # the store (the event's letter replayed last), since a header is the publisher's to set.
    task_id = send(letter.task_name, args, kwargs)
    with new_uow() as uow:
        uow.dead_letters.set_status(letter_id, DeadLetterStatus.REPLAYED, now)
        uow.commit()
    log.info("replayed dead letter %s event_id=%s as task %s", letter_id, letter.event_id, task_id)
    return letter, task_id


def _get(uow: StoreUnitOfWork, letter_id: int, *allowed: DeadLetterStatus) -> DeadLetter:
    letter = uow.dead_letters.get(letter_id)
    if letter is None:
        raise LookupError(f"no dead letter with id {letter_id}")
    if letter.status not in allowed:
        wanted = " or ".join(s.value for s in allowed)
        raise ReplayRefusedError(f"dead letter {letter_id} is {letter.status}, not {wanted}")
    return letter


def discard(letter_id: int, *, new_uow: Callable[[], StoreUnitOfWork], now: datetime) -> DeadLetter:
    with new_uow() as uow:
        letter = _get(uow, letter_id, DeadLetterStatus.DEAD)
        uow.dead_letters.set_status(letter_id, DeadLetterStatus.DISCARDED, now)
        uow.commit()
    return letter
