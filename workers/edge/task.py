"""The event tasks, thin adapters with the contract's names (docs/contract.md §2).

Each accepts its call (workers/edge/accept.py), counts the delivery, runs the command (its
transaction, then its follow-ons: workers/runtime/root.py), and turns what `decide` says of a
failure into Celery's terms: `task.retry`, or a dead letter after which the task fails (its
message is acked: celeryconfig.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from celery import shared_task
from celery.exceptions import Reject

from workers.edge import dead_letters, gate
from workers.edge.accept import Accepted, Delivery, Refusal, accept_call
from workers.edge.decide import DeadLetter, Retry, decide, past_the_limit
from workers.errors import (
    AttemptsExhaustedError,
    DeadLetteredError,
    DeadLetterLostError,
    failure_of,
)
from workers.handlers import Result, handle_catalog_parsed, handle_stage_finished
from workers.messages import CATALOG_PARSED, STAGE_FINISHED
from workers.runtime.root import Runtime, execute, runtime
from workers.schemas import CatalogParsedEvent, IncomingEvent, StageFinishedEvent

log = logging.getLogger(__name__)

# `throws`: a dead-lettered event is an expected failure, logged without a second traceback.
# `max_retries=None`: Celery's own cap (3 by default) must never end an event; the project's
# IMAGEGROUPS_MAX_ATTEMPTS, counted in the database, is the only one.
_OPTIONS: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "max_retries": None,
    "throws": (DeadLetteredError,),
    # A revoked id never drops an event, nor does a remote `terminate` kill its handler
    # (workers/edge/gate.py); a worker whose database does not answer gives it back.
    "Request": gate.GATED_REQUEST_PATH,
}


# The task is positional-only, so that a keyword a publisher sends (even `self` or `task`)
# reaches the envelope check and is refused there, with a reason.
@shared_task(name=CATALOG_PARSED.task, **_OPTIONS)  # type: ignore[untyped-decorator]
def catalog_parsed(task: Any, /, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return process(task, CatalogParsedEvent, handle_catalog_parsed, args, kwargs)


@shared_task(name=STAGE_FINISHED.task, **_OPTIONS)  # type: ignore[untyped-decorator]
def stage_finished(task: Any, /, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return process(task, StageFinishedEvent, handle_stage_finished, args, kwargs)


def process(
    task: Any,
    model: type[IncomingEvent],
    handler: Callable[..., Result],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> dict[str, Any]:
    """One delivery of an event: accept it, count it, handle it; or what `decide` says."""
    rt = runtime()
    with rt.metrics.in_progress(task.name):
        received = Received(args, kwargs, delivery(task))
        verdict = accept_call(model, args, kwargs, received.delivery)
        return _process(task, rt, verdict, handler, received)


def delivery(task: Any) -> Delivery:
    """The facts of this delivery, from Celery's request."""
    request = task.request
    retries = request.retries if isinstance(request.retries, int) else 0
    redelivered = bool((request.delivery_info or {}).get("redelivered"))
    return Delivery(task.name, request.id, retries, redelivered)


@dataclass(frozen=True)
class Received:
    """The task's call as received (a dead letter keeps it), and the facts of its delivery."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    delivery: Delivery


def _process(
    task: Any,
    rt: Runtime,
    verdict: Accepted | Refusal,
    handler: Callable[..., Result],
    call: Received,
) -> dict[str, Any]:
    started, facts = time.perf_counter(), call.delivery
    attempt = facts.attempt_at_least()  # until the database's count says more
    try:
        attempt = _count_delivery(rt, facts, verdict.event_id, attempt)
        if isinstance(verdict, Refusal):
            raise verdict.error
        command = verdict.on_attempt(attempt)
        done = execute(lambda deps: handler(command, deps=deps), rt)
    except Exception as exc:
        _fail(task, rt, exc, verdict, attempt, call)
    out = done.result.outcome
    seconds = time.perf_counter() - started
    rt.metrics.handled(task.name, out.outcome.value, seconds, done.result.stage_ends)
    log.info(
        "%s event_id=%s task_id=%s image_group_id=%s outcome=%s status=%s follow_ons=%d",
        task.name,
        out.event_id,
        facts.task_id,
        out.image_group_id,
        out.outcome,
        out.status,
        len(done.result.messages),
    )
    return out.as_dict()


def _count_delivery(rt: Runtime, facts: Delivery, event_id: str | None, attempt: int) -> int:
    """Deliveries after the first are counted, in their own transaction (so a crash mid-
    handler still counts); past IMAGEGROUPS_MAX_ATTEMPTS the event is given up on."""
    if facts.is_redelivery():
        with rt.new_uow() as uow:
            attempt = 1 + uow.deliveries.record_delivery(event_id or facts.task_id, rt.now())
            uow.commit()
    reason = past_the_limit(attempt, rt.settings.retry_policy)
    if reason is not None:
        raise AttemptsExhaustedError(reason)
    return attempt


def _fail(
    task: Any,
    rt: Runtime,
    exc: Exception,
    verdict: Accepted | Refusal,
    attempt: int,
    call: Received,
) -> NoReturn:
    """Translate the decision on a failed delivery: a retry, or a dead letter, then fail."""
    decision = decide(failure_of(exc), attempt=attempt, policy=rt.settings.retry_policy)
    if isinstance(decision, Retry):
        log.warning(
            "%s event_id=%s task_id=%s attempt %d/%d failed (%s: %s); retrying in %.2fs",
            task.name,
            verdict.event_id,
            call.delivery.task_id,
            attempt,
            rt.settings.max_attempts,
            type(exc).__name__,
            exc,
            decision.delay,
        )
        _retry(task, rt, exc, decision.delay)
    letter_id = _dead_letter(task, rt, exc, verdict, attempt, call)
    rt.metrics.dead_lettered_event(task.name)
    log.error(
        "%s event_id=%s task_id=%s dead-lettered as %d after %d attempt(s) (%s): %s: %s",
        task.name,
        verdict.event_id,
        call.delivery.task_id,
        letter_id,
        attempt,
        decision.reason if isinstance(decision, DeadLetter) else decision,
        type(exc).__name__,
        exc,
    )
    raise DeadLetteredError(f"dead-lettered as {letter_id}: {type(exc).__name__}: {exc}") from exc


def _dead_letter(
    task: Any,
    rt: Runtime,
    exc: Exception,
    verdict: Accepted | Refusal,
    attempt: int,
    call: Received,
) -> int:
    try:
        letter_id = dead_letters.store(
            rt.new_uow,
            task_name=task.name,
            event_id=verdict.event_id,
            body=dead_letters.protocol_body(call.args, call.kwargs),
            content_type="application/json",
            exc=exc,
            attempts=attempt,
            now=rt.now(),
        )
    except Exception:
        # The store ends every failure the letter causes itself: what gets here is the
        # database away, and without it the letter would be lost, so the event waits.
        log.error("could not dead-letter event_id=%s", verdict.event_id, exc_info=True)
        waiting = decide(
            failure_of(exc), attempt=attempt, policy=rt.settings.retry_policy, store_failures=1
        )
        _retry(task, rt, exc, waiting.delay if isinstance(waiting, Retry) else 0.0)
    if letter_id is None:  # not even a minimal letter stores: given up, logged CRITICAL
        raise DeadLetterLostError(
            f"event_id={verdict.event_id} could not be dead-lettered: {type(exc).__name__}: {exc}"
        ) from exc
    return letter_id


def _retry(task: Any, rt: Runtime, exc: Exception, delay: float) -> NoReturn:
    rt.metrics.retried(task.name, type(exc).__name__)
    try:
        raise task.retry(exc=exc, countdown=delay, max_retries=None)
    except Reject as refused:
        # Celery rejects *without* requeue when it cannot publish the retry (broker down):
        # that would drop the event. Requeue it instead; the redelivery is counted.
        raise Reject(refused.reason, requeue=True) from exc
