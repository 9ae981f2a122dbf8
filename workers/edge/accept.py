"""What this worker accepts, each rule checked once: a Celery task message (`accept_message`,
in the consumer, before Celery sees it) whose call carries one envelope of docs/contract.md §2
(`accept_call`, in the task: workers/schemas.py), turned into a command, or a `Refusal` with
its reason and the event's id when the body names a valid one.

Celery trusts its publishers: a bad header or body escapes from its consumer as an exception
(which the Redis transport takes for a lost connection), or fails the task before our code
runs (and the message is acked away). A per-message `timelimit` and `expires` are the
worker's business (a publisher must not have handlers killed, nor an event dropped), so they
are removed, as is every header Celery does not define, since each header becomes an
attribute of the task's request: no header a publisher sets steers the worker. An `eta` too
far ahead is dropped, not refused.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Container, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from celery.utils.time import maybe_iso8601
from pydantic import ValidationError

from domain import RecordStageResult, ReserveCatalog, on_delivery
from workers.errors import (
    InvalidEventError,
    InvalidTaskMessageError,
    UndecodableMessageError,
    UnknownTaskError,
)
from workers.messages import MALFORMED_HEADER
from workers.schemas import EnvelopeBase, IncomingEvent

log = logging.getLogger(__name__)

E = TypeVar("E", bound=EnvelopeBase)

#: Headers passed on to Celery, each with the check its value must pass.
_TEXT = (lambda v: v is None or isinstance(v, str), "a string or null")
_FLAG = (lambda v: v is None or isinstance(v, bool), "true, false or null")
_HEADERS: dict[str, tuple[Callable[[Any], bool], str]] = {
    **dict.fromkeys(
        ("lang", "shadow", "root_id", "parent_id", "group", "argsrepr", "kwargsrepr"), _TEXT
    ),
    **dict.fromkeys(("origin", "compression"), _TEXT),
    **dict.fromkeys(("ignore_result", "redelivered"), _FLAG),
    "group_index": (lambda v: v is None or _is_int(v), "an integer or null"),
    "retries": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "eta": (lambda v: v is None or isinstance(v, str), "an ISO 8601 timestamp or null"),
}
#: Keys Celery reads from the body's third element; any other would land on the request.
_EMBED_KEYS = frozenset({"callbacks", "errbacks", "chain", "chord"})
#: A task id (Celery's, not ours: the domain's ids are bounded in domain/values.py).
MAX_TASK_ID_LENGTH = 255
#: What the consumer refuses a message with, each its own dead letter's error_type.
MESSAGE_ERRORS = (InvalidTaskMessageError, UndecodableMessageError, UnknownTaskError)


@dataclass(frozen=True)
class Delivery:
    """What the broker tells of this delivery of a task message."""

    task_name: str
    task_id: str
    retries: int  # how often the task has retried itself before this delivery
    redelivered: bool  # the broker handed it out before (a worker died holding it)

    def is_redelivery(self) -> bool:
        return self.retries > 0 or self.redelivered

    def attempt_at_least(self) -> int:
        """At least this attempt; `retries` is a publisher's header: never "the last"."""
        return 1 + min(self.retries, 1)


@dataclass(frozen=True)
class Accepted:
    """A valid event, as the command its handler takes."""

    command: ReserveCatalog | RecordStageResult
    event_id: str
    delivery: Delivery

    def on_attempt(self, attempt: int) -> ReserveCatalog | RecordStageResult:
        return on_delivery(self.command, attempt)


@dataclass(frozen=True)
class Refusal:
    """Why a message or a call is not accepted; `error` is what its dead letter records."""

    error: Exception
    event_id: str | None

    @property
    def reason(self) -> str:
        return f"{type(self.error).__name__}: {self.error}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def accept_message(
    message: Any, accepted: Container[str], *, now: datetime, max_eta: timedelta
) -> Refusal | None:
    """The consumer's one check of a message: None when Celery may run it (its headers made
    fit for it), or the refusal; the call inside is accepted by the task (`accept_call`)."""
    try:
        check(message, accepted, now=now, max_eta=max_eta)
    except MESSAGE_ERRORS as refused:
        return Refusal(refused, message_event_id(message))
    return None


def check(message: Any, accepted: Container[str], *, now: datetime, max_eta: timedelta) -> None:
    """Raise one of the message errors, or leave the message's headers fit for Celery.

    `accepted`: the task names this worker runs; `max_eta`: how far ahead a message may be
    scheduled (an eta further ahead is dropped: a message held long ties up the worker).
    """
    headers = message.headers
    if isinstance(headers, MutableMapping) and MALFORMED_HEADER in headers:
        raise InvalidTaskMessageError(f"malformed broker message: {headers[MALFORMED_HEADER]}")
    if not isinstance(headers, MutableMapping):
        raise InvalidTaskMessageError(
            f"headers must be a mapping, got {type(headers).__name__} "
            "(not a Celery protocol 2 task message)"
        )
    _check_task(message, headers, accepted)
    _check_id(headers.get("id"))
    headers.setdefault("retries", 0)
    for key, (valid, wanted) in _HEADERS.items():
        if key in headers and not valid(headers[key]):
            raise InvalidTaskMessageError(f"header {key!r} must be {wanted}, got {headers[key]!r}")
    for key in [k for k in headers if k not in _HEADERS and k not in ("task", "id")]:
        del headers[key]
    _check_body(message)
    _check_eta(message, headers, now, max_eta)


def _check_task(message: Any, headers: MutableMapping[str, Any], accepted: Container[str]) -> None:
    task = headers.get("task")
    if task is None:
        if isinstance(_decoded(message), dict) and "task" in _decoded(message):
            raise InvalidTaskMessageError(
                "a Celery protocol 1 message (task name in the body); publish with "
                "protocol 2, Celery's default"
            )
        raise InvalidTaskMessageError("no 'task' header: not a Celery protocol 2 task message")
    if not isinstance(task, str):
        raise InvalidTaskMessageError(f"header 'task' must be a string, got {task!r}")
    if task not in accepted:
        raise UnknownTaskError(f"unknown task {task[:200]!r}: this worker does not run it")


def _check_id(task_id: Any) -> None:
    if not isinstance(task_id, str) or not 0 < len(task_id) <= MAX_TASK_ID_LENGTH:
        raise InvalidTaskMessageError(
            f"header 'id' must be a string of 1 to {MAX_TASK_ID_LENGTH} characters, got {task_id!r}"
        )


def _check_eta(
    message: Any, headers: MutableMapping[str, Any], now: datetime, max_eta: timedelta
) -> None:
    """An eta is only a request to wait: one too far ahead is dropped (the event runs now),
    never a reason to refuse the event. Events are idempotent facts, so running one early
    costs at most an attempt, and a clock far off must not turn our own retry into a dead
    letter. The bound already allows for clocks that disagree (see Settings.max_eta_seconds)."""
    eta = headers.get("eta")
    if eta is None:
        return
    try:
        when = maybe_iso8601(eta)
    except (ValueError, OverflowError, TypeError):
        when = None
    if when is None:  # Celery reads "" as no time at all, then fails on it
        raise InvalidTaskMessageError(f"header 'eta' is not a timestamp: {eta!r}")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if when - now > max_eta:
        log.warning(
            "%s event_id=%s task_id=%s: eta %s is more than %.0fs ahead (a clock far off, or "
            "the publisher's choice); it runs now",
            headers.get("task"),
            call_event_id(*_decoded(message)[:2]),
            headers.get("id"),
            eta,
            max_eta.total_seconds(),
        )
        headers["eta"] = None


def _check_body(message: Any) -> None:
    body = _decoded(message)
    if not isinstance(body, list | tuple) or len(body) != 3:
        raise InvalidTaskMessageError(
            f"body must be the protocol 2 triple [args, kwargs, embed], got {type(body).__name__}"
        )
    args, kwargs, embed = body
    if not isinstance(args, list | tuple):
        raise InvalidTaskMessageError(f"args must be a list, got {type(args).__name__}")
    if not isinstance(kwargs, dict):
        raise InvalidTaskMessageError(f"kwargs must be an object, got {type(kwargs).__name__}")
    if "self" in kwargs:
        # Celery calls every task as `__call__(self, *args, **kwargs)`: it would fail there.
        raise InvalidTaskMessageError("kwargs must not have a key 'self'")
    if embed is None:
        return
    if not isinstance(embed, dict):
        raise InvalidTaskMessageError(f"embed must be an object, got {type(embed).__name__}")
    unknown = sorted(str(k) for k in set(embed) - _EMBED_KEYS)
    if unknown:
        raise InvalidTaskMessageError(f"embed has keys Celery does not define: {unknown}")
    used = sorted(k for k, v in embed.items() if v)
    if used:
        raise InvalidTaskMessageError(
            f"workflow links are not accepted on event tasks (embed sets {used}); "
            "an event must not make the worker send other tasks"
        )


def _decoded(message: Any) -> Any:
    """The body, decoded once (kombu keeps it for Celery); any failure is undecodable."""
    try:
        return message.decode()
    except Exception as exc:
        raise UndecodableMessageError(f"{type(exc).__name__}: {exc}") from exc


def call_event_id(args: Any, kwargs: Any) -> str | None:
    """The event_id of the envelope a task call carries (keyword `event`, or a lone positional
    argument), in canonical form; None when there is no valid one. A dead letter of a message
    refused for any reason still names its event by this."""
    if isinstance(kwargs, dict) and "event" in kwargs:
        return event_id_of(kwargs["event"])
    if isinstance(args, Sequence) and not isinstance(args, str) and len(args) == 1:
        return event_id_of(args[0])
    return None


def message_event_id(message: Any) -> str | None:
    """`call_event_id` of a message's body, when it decodes to a protocol 2 triple."""
    try:
        body = message.decode()
    except Exception:
        return None
    if isinstance(body, list | tuple) and len(body) == 3:
        return call_event_id(body[0], body[1])
    return None


def event_id_of(event: Any) -> str | None:
    """An envelope's event_id in canonical form, or None when it has no valid one."""
    value = event.get("event_id") if isinstance(event, dict) else None
    try:
        return str(uuid.UUID(value)) if isinstance(value, str) else None
    except ValueError:
        return None


def accept_call(
    model: type[IncomingEvent], args: Any, kwargs: Any, delivery: Delivery
) -> Accepted | Refusal:
    """The task's one check of its call: the envelope as a command, or the refusal."""
    try:
        envelope = parse(model, args, kwargs)
    except InvalidEventError as refused:
        return Refusal(refused, call_event_id(args, kwargs))
    command = envelope.to_command()
    return Accepted(command, command.ids.event_id, delivery)


def parse(model: type[E], args: Any, kwargs: Any) -> E:
    """The call as the contract has it (one keyword, `event`, an object; the consumer checked
    its shape, `check`) validated into the envelope model; any mismatch is InvalidEventError."""
    if args:
        raise InvalidEventError(
            "positional arguments are not accepted; send the envelope as keyword 'event'"
        )
    extra = sorted(set(kwargs) - {"event"})
    if extra:
        raise InvalidEventError(f"unexpected keyword arguments {extra}; only 'event' is accepted")
    if "event" not in kwargs:
        raise InvalidEventError("missing keyword argument 'event' (the envelope)")
    event = kwargs["event"]
    if not isinstance(event, dict):
        raise InvalidEventError(f"event must be a JSON object, got {type(event).__name__}")
    try:
        return model.model_validate(event)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'event'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidEventError(f"invalid {model.__name__}: {problems}") from None
