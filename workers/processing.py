"""What every event task does: count the delivery, parse the event into a command, handle
it (one transaction) and publish its follow-ons (workers/service.py); or retry it, or
dead-letter it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from celery.exceptions import Reject
from pydantic import ValidationError

from domain import on_delivery
from workers import dead_letters, metrics, protocol
from workers.errors import (
    AttemptsExhaustedError,
    DeadLetteredError,
    DeadLetterLostError,
    InvalidEventError,
    backoff,
    is_transient,
)
from workers.handlers import Result
from workers.root import Runtime, runtime
from workers.schemas import EnvelopeBase, IncomingEvent
from workers.service import execute

log = logging.getLogger(__name__)

E = TypeVar("E", bound=EnvelopeBase)


def process(
    task: Any,
    model: type[IncomingEvent],
    handler: Callable[..., Result],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> dict[str, Any]:
    """The event path of a task: count it, parse it into a command, handle it, publish."""
    with metrics.recorder().in_progress(task.name):
        return _process(task, model, handler, args, kwargs)


def _process(
    task: Any,
    model: type[IncomingEvent],
    handler: Callable[..., Result],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> dict[str, Any]:
    rt, started = runtime(), time.perf_counter()
    request = task.request
    event_id = protocol.call_event_id(args, kwargs)
    # Before the count is read: a lower bound that holds even when the database is down.
    attempts = 1 + request.retries if isinstance(request.retries, int) else 1
    try:
        attempts = _count_delivery(rt, request, event_id, attempts)
        command = on_delivery(parse(model, args, kwargs).to_command(), attempts)
        done = execute(lambda deps: handler(command, deps=deps), rt)
    except Exception as exc:
        _fail(task, rt, exc, Attempt(attempts, event_id, args, kwargs))
    out = done.result.outcome
    seconds = time.perf_counter() - started
    metrics.recorder().handled(task.name, out.outcome.value, seconds, done.result.stage_ends)
    log.info(
        "%s event_id=%s task_id=%s image_group_id=%s outcome=%s status=%s follow_ons=%d",
        task.name,
        out.event_id,
        request.id,
        out.image_group_id,
        out.outcome,
        out.status,
        len(done.result.messages),
    )
    return out.as_dict()


def _count_delivery(rt: Runtime, request: Any, event_id: str | None, attempts: int) -> int:
    """Deliveries after the first are counted, in their own transaction (so a crash mid-
    handler still counts); past IMAGEGROUPS_MAX_ATTEMPTS the event is given up on."""
    if _is_redelivery(request):
        with rt.new_uow() as uow:
            attempts = 1 + uow.deliveries.record_delivery(event_id or request.id, rt.now())
            uow.commit()
    if attempts > rt.settings.max_attempts:
        raise AttemptsExhaustedError(
            f"delivered {attempts} times; the limit is {rt.settings.max_attempts}"
        )
    return attempts


def parse(model: type[E], args: tuple[Any, ...], kwargs: dict[str, Any]) -> E:
    """Validate the call into the envelope model; any mismatch is an InvalidEventError."""
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


@dataclass(frozen=True)
class Attempt:
    """One delivery of an event, as the failure path needs it."""

    number: int
    event_id: str | None
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


def _fail(task: Any, rt: Runtime, exc: Exception, attempt: Attempt) -> NoReturn:
    """Retry what is transient while attempts remain; dead-letter the rest, then fail."""
    settings = rt.settings
    delay = backoff(
        attempt.number, base=settings.retry_backoff_base, cap=settings.retry_backoff_max
    )
    if is_transient(exc) and attempt.number < settings.max_attempts:
        log.warning(
            "%s event_id=%s task_id=%s attempt %d/%d failed (%s: %s); retrying in %.2fs",
            task.name,
            attempt.event_id,
            task.request.id,
            attempt.number,
            settings.max_attempts,
            type(exc).__name__,
            exc,
            delay,
        )
        _retry(task, exc, delay)
    letter_id = _dead_letter(task, rt, exc, attempt, delay)
    metrics.recorder().dead_lettered_event(task.name)
    log.error(
        "%s event_id=%s task_id=%s dead-lettered as %d after %d attempt(s): %s: %s",
        task.name,
        attempt.event_id,
        task.request.id,
        letter_id,
        attempt.number,
        type(exc).__name__,
        exc,
    )
    raise DeadLetteredError(f"dead-lettered as {letter_id}: {type(exc).__name__}: {exc}") from exc


def _dead_letter(task: Any, rt: Runtime, exc: Exception, attempt: Attempt, delay: float) -> int:
    try:
        letter_id = dead_letters.store(
            rt.new_uow,
            task_name=task.name,
            event_id=attempt.event_id,
            body=dead_letters.protocol_body(attempt.args, attempt.kwargs),
            content_type="application/json",
            exc=exc,
            attempts=attempt.number,
            now=rt.now(),
        )
    except Exception:
        # Only a transient failure gets here (the store ends every other one itself): the
        # database is away, and without it the letter would be lost, so the message waits.
        log.error("could not dead-letter event_id=%s; retrying", attempt.event_id, exc_info=True)
        _retry(task, exc, delay)
    if letter_id is None:  # not even a minimal letter stores: given up, logged CRITICAL
        raise DeadLetterLostError(
            f"event_id={attempt.event_id} could not be dead-lettered: {type(exc).__name__}: {exc}"
        ) from exc
    return letter_id


def _retry(task: Any, exc: Exception, delay: float) -> NoReturn:
    metrics.recorder().retried(task.name, type(exc).__name__)
    try:
        raise task.retry(exc=exc, countdown=delay, max_retries=None)
    except Reject as refused:
        # Celery rejects *without* requeue when it cannot publish the retry (broker down):
        # that would drop the event. Requeue it instead; the redelivery is counted.
        raise Reject(refused.reason, requeue=True) from exc


def _is_redelivery(request: Any) -> bool:
    redelivered = bool((request.delivery_info or {}).get("redelivered"))
    return bool(request.retries) or redelivered
