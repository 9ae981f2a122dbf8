"""Celery's side of an event, in one module: the consumer that accepts every message first, the
request Celery makes of each event message (not revocable, and held back while the database
is away), and the event tasks, thin adapters with the contract's names (docs/contract.md §2).
The checks (workers/edge/accept.py) and the policy (workers/edge/decide.py) are pure
modules of their own; this one only translates what they say into Celery's terms.

Each accepts its call (workers/edge/accept.py), counts the delivery, runs the command (its
transaction, then its follow-ons: workers/runtime/root.py), and turns what `decide` says of a
failure into Celery's terms: `task.retry`, or a dead letter after which the task fails (its
message is acked: celeryconfig.py).

The worker's request for an event task: no revocation or remote kill ends an event.

An event is a fact, and its task id is its event_id, which a publisher knows before the
event arrives. Celery discards and acknowledges a message whose id is in the worker's revoked
set (celery/worker/strategy.py, Request.revoked), and `revoke(terminate=True)` kills the
handler and acknowledges its message: either way the event would end with no outcome. The
remote-control policy refuses `revoke` by default (workers/broker/control_policy.py); this is the
second line, for an id that got into the set anyway (an operator's `full` remote control).
A wrong event ends as the state machine decides (stale, or a dead letter an operator can
discard), never unhandled.

A worker that cannot reach its database takes no events and gives back the ones it holds.

The probe (persistence/db.py) asks the database for `SELECT 1` every second, in a
thread of the worker's main process, and gives up on an answer after 2 s. The consumer's own
loop reads the verdict every second (only that loop may touch the consumer: kombu is not
thread-safe):
- no answer: stop consuming the event queue (Celery's `cancel_task_queue`, what the
  `cancel_consumer` remote command does) and give back, rejected with requeue (the Redis
  transport puts them back in the queue for a healthy worker), what the worker holds: events
  waiting for a pool process, retries whose countdown ends meanwhile, and handlers running
  for longer than the probe's deadline, whose pool process is killed as Celery does when the
  broker connection is lost (a handler takes milliseconds; one that long is stuck);
- an answer again: consume again.
A given-back event is a delivery like any other: the next worker counts it.

The consumer (DeadLetteringConsumer) accepts every message first and dead-letters what it
refuses, as `decide` says: stored then acked, or requeued while the store is away.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn

from celery import bootsteps, shared_task
from celery.exceptions import Reject
from celery.utils.imports import symbol_by_name
from celery.worker import state as celery_state
from celery.worker.consumer import Consumer
from celery.worker.request import Request
from celery.worker.state import active_requests, reserved_requests, task_ready
from vine import promise

from workers.broker.control_step import GuardedBlueprint
from workers.edge import dead_letters
from workers.edge.accept import (
    Accepted,
    CatalogParsedEvent,
    Delivery,
    IncomingEvent,
    Refusal,
    StageFinishedEvent,
    accept_call,
    accept_message,
    message_event_id,
)
from workers.edge.decide import (
    DeadLetter,
    Failure,
    Requeue,
    Retry,
    decide,
    past_the_limit,
    store_pause,
)
from workers.errors import (
    AttemptsExhaustedError,
    DeadLetteredError,
    DeadLetterLostError,
    InvalidTaskMessageError,
    UndecodableMessageError,
    UnknownTaskError,
    failure_of,
)
from workers.handlers import (
    EventOutcome,
    Outcome,
    Result,
    handle_catalog_parsed,
    handle_stage_finished,
)
from workers.messages import CATALOG_PARSED, STAGE_FINISHED
from workers.runtime.root import PROBE_INTERVAL, PROBE_TIMEOUT, Runtime, execute, runtime, state

log = logging.getLogger(__name__)


class EventRequest(Request):  # type: ignore[misc]
    """A request that is never revoked and never terminated by remote control.

    The hard time limit still ends a handler that hangs (its event comes back, counted), and
    a lost broker connection still cancels running handlers (their events come back too).
    """

    __slots__ = ()

    def revoked(self) -> bool:
        if self.id in celery_state.revoked:
            # Forgotten once seen: the retries of the event carry the same id.
            celery_state.revoked.discard(self.id)
            log.warning(
                "event task_id=%s was revoked by remote control: ignored, an event is a fact "
                "and every event ends with an outcome (applied, duplicate, stale or dead letter)",
                self.id,
            )
        return False

    def terminate(self, pool: Any, signal: Any = None) -> None:
        log.warning(
            "event task_id=%s: remote termination ignored, the handler runs to its end or to "
            "its time limit (which brings the event back)",
            self.id,
        )


#: The path the event tasks name as their `Request` (workers/edge/task.py).
GATED_REQUEST_PATH = "workers.edge.task:GatedRequest"

#: A handler still running this long after it started, while the database does not answer,
#: is stuck on it: its event is given back.
STUCK_AFTER = PROBE_TIMEOUT


def give_back(request: Any) -> None:
    """Hand a request back to the queue for a worker that can reach its database."""
    task_ready(request)
    request.reject(requeue=True)
    state().gate.given_back += 1
    state().counting.recorder.given_back()


class GatedRequest(EventRequest):
    """An event's request that a worker not taking events gives back instead of running.

    Celery calls `revoked()` first thing when it hands a request to the pool (the request
    class built by celery/worker/request.py:create_request_cls), and skips the request when
    it says so, freeing its pool slot; tests/unit/test_database_gate.py checks that it does.
    """

    __slots__ = ()

    def revoked(self) -> bool:
        if self.acknowledged:  # given back while it waited for a pool process
            return True
        if not state().health.taking_events:
            give_back(self)
            return True
        return bool(super().revoked())


class HookMissingError(RuntimeError):
    """An event task does not run with the request the gate needs."""


def require_gated_requests(app: Any) -> None:
    for name, task in app.tasks.items():
        if not name.startswith("celery.") and not issubclass(
            symbol_by_name(task.Request), GatedRequest
        ):
            raise HookMissingError(f"task {name} runs without {GATED_REQUEST_PATH}")


class DatabaseGate(bootsteps.StartStopStep):  # type: ignore[misc]
    """The consumer's side of the gate: pause, give back, resume, once a second."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        require_gated_requests(c.app)
        self.tick_ref: Any = None
        self.paused: list[str] | None = None  # the queues it stopped consuming

    def start(self, c: Any) -> None:
        settings = runtime().settings
        state().gate.watch(settings.database_url, settings.lock_timeout_ms)
        self.tick_ref = c.timer.call_repeatedly(PROBE_INTERVAL, self.tick, (c,))

    def stop(self, c: Any) -> None:
        if self.tick_ref is not None:
            self.tick_ref.cancel()
            self.tick_ref = None

    def shutdown(self, c: Any) -> None:
        self.stop(c)
        state().gate.stop()

    def tick(self, c: Any) -> None:
        if self.paused is None and not state().gate.reachable:
            self.pause(c)
        elif self.paused is not None and state().gate.reachable:
            self.resume(c)
        elif self.paused is not None:
            give_back_held(c)

    def pause(self, c: Any) -> None:
        self.paused = [queue.name for queue in c.task_consumer.queues]
        _taking_events(False)
        for queue in self.paused:
            c.cancel_task_queue(queue)
        held = give_back_held(c)
        log.warning(
            "the database does not answer (%s): this worker takes no events from %s until it "
            "does, and gave back the %d it held",
            state().gate.error,
            ", ".join(self.paused),
            held,
        )

    def resume(self, c: Any) -> None:
        queues, self.paused = self.paused or [], None
        for queue in queues:
            c.add_task_queue(queue)
        _taking_events(True)
        log.warning("the database answers again: taking events from %s", ", ".join(queues))


def _taking_events(taking: bool) -> None:
    state().health.taking_events = taking
    state().counting.recorder.taking_events(taking)


def give_back_held(c: Any) -> int:
    """Give back what this worker holds and has not finished; returns how many."""
    held = 0
    for request in list(reserved_requests):
        # Not yet handed to the pool (the pool's own result is set then): it waits for a slot.
        if request in active_requests or request.acknowledged:
            continue
        if getattr(request, "_apply_result", None) is None:
            give_back(request)
            held += 1
    now = time.time()
    for request in list(active_requests):
        started = request.time_start
        if request.acknowledged or not started or now - started < STUCK_AFTER:
            continue
        request.cancel(c.pool, emit_retry=False)
        give_back(request)
        held += 1
    return held


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
    # (workers/edge/task.py); a worker whose database does not answer gives it back.
    "Request": GATED_REQUEST_PATH,
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
        counted = _count_delivery(rt, facts, verdict.event_id, attempt)
        if isinstance(counted, Copy):
            return _copy_ended(task, rt, counted, verdict, facts, started)
        attempt = counted
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


@dataclass(frozen=True)
class Copy:
    """A counted delivery of a copy of an event whose retry chain another copy holds."""

    holder: str | None


def _count_delivery(rt: Runtime, facts: Delivery, event_id: str | None, attempt: int) -> int | Copy:
    """Deliveries after the first are counted, in their own transaction (so a crash mid-
    handler still counts); past IMAGEGROUPS_MAX_ATTEMPTS the event is given up on.

    The first copy of an event counted holds the event's one retry chain. A copy published
    twice or three times that fails (a stage result before its catalog) retries once, and
    its next delivery ends here, uncounted: the holder's chain gives the event its outcome,
    so the copies no longer spend one budget of deliveries together."""
    if facts.is_redelivery():
        key = event_id or facts.task_id
        with rt.new_uow() as uow:
            counted = uow.deliveries.record_delivery(key, rt.now(), copy=facts.task_id)
            holder = uow.deliveries.chain_holder(key) if counted is None else None
            uow.commit()
        if counted is None:
            return Copy(holder)
        attempt = 1 + counted
    reason = past_the_limit(attempt, rt.retry_policy)
    if reason is not None:
        raise AttemptsExhaustedError(reason)
    return attempt


def _copy_ended(
    task: Any,
    rt: Runtime,
    copy: Copy,
    verdict: Accepted | Refusal,
    facts: Delivery,
    started: float,
) -> dict[str, Any]:
    """A copy whose event another copy's retries carry ends as a duplicate of it, acked."""
    event_id = verdict.event_id or facts.task_id
    detail = f"a copy of an event the retries of task {copy.holder} carry"
    rt.metrics.handled(task.name, EventOutcome.DUPLICATE.value, time.perf_counter() - started)
    log.info(
        "%s event_id=%s task_id=%s outcome=duplicate: %s",
        task.name,
        event_id,
        facts.task_id,
        detail,
    )
    return Outcome(EventOutcome.DUPLICATE, event_id, detail=detail).as_dict()


def _fail(
    task: Any,
    rt: Runtime,
    exc: Exception,
    verdict: Accepted | Refusal,
    attempt: int,
    call: Received,
) -> NoReturn:
    """Translate the decision on a failed delivery: a retry, or a dead letter, then fail."""
    decision = decide(failure_of(exc), attempt=attempt, policy=rt.retry_policy)
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
        waiting = decide(failure_of(exc), attempt=attempt, policy=rt.retry_policy, store_failures=1)
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


#: How long a task event waits in the consumer to be published with the others sent meanwhile.
#: Celery publishes the buffered task events on the event loop's next turn: one PUBLISH, a
#: blocking Redis round trip, per turn, that is one or two per task. Once every 10 ms carries
#: all of them (at most Celery's buffer limit, 24, at once); Flower shows them 10 ms later.
EVENTS_BATCH_SECONDS = 0.01


@dataclass
class StoreFailures:
    """How often in a row the dead-letter store has failed, and until when it is left alone."""

    count: int = 0
    retry_at: float = 0.0

    def now(self) -> int:
        """The failures that count now: none once the pause after the last one is over."""
        return self.count if time.monotonic() < self.retry_at else 0

    def failed(self) -> int:
        self.count += 1
        self.retry_at = time.monotonic() + store_pause(self.count)
        return self.count


class DeadLetteringConsumer(Consumer):  # type: ignore[misc]
    """Every message ends acked with an outcome, or dead-lettered and then acked.

    A message is acked only once its dead letter is stored. When the store fails (the
    database is down) the message goes back to the end of its queue after a pause that grows
    while the store keeps failing: it neither spins nor holds a prefetch slot for long, and
    the events behind it keep flowing.
    """

    # Remote control as the policy allows, and no worker-to-worker sync
    # (workers/broker/control_step.py), which checks every event task runs with this request.
    Blueprint = GuardedBlueprint
    event_request = EventRequest

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._store_failures = StoreFailures()
        self._events_due: Any = None  # the timer entry of the next batch of task events
        self._loop_thread: int | None = None  # the event loop's, once it registers with it

    def register_with_event_loop(self, hub: Any) -> None:
        # Called by Celery's event loop in its own thread: the hub's timer is that thread's.
        self._loop_thread = threading.get_ident()
        super().register_with_event_loop(hub)

    def on_send_event_buffered(self) -> None:
        """Celery's dispatcher buffered a task event: publish it with the next batch."""
        if self.hub is None or threading.get_ident() != self._loop_thread:
            super().on_send_event_buffered()  # the hub's timer is the loop thread's alone
        elif self._events_due is None:
            self._events_due = self.hub.call_later(EVENTS_BATCH_SECONDS, self._flush_batch)

    def _flush_batch(self) -> None:
        self._events_due = None
        self._flush_events()

    def shutdown(self) -> None:
        # The events still waiting for their batch leave before the dispatcher closes.
        if self._events_due is not None:
            self._events_due.cancel()
            self._events_due = None
            try:
                self._flush_events()
            except Exception:
                log.warning("could not publish the last task events", exc_info=True)
        super().shutdown()

    def create_task_handler(self, promise: Any = promise) -> Any:
        handle = super().create_task_handler(promise)
        # The Redis transport counts KeyError as a connection error (a stale socket can raise
        # one), so a KeyError from a malformed message would make the consumer reconnect for
        # ever. Nothing in message handling talks to the broker; only real ones go up.
        connection_errors = tuple(e for e in self.connection_errors if e is not KeyError)
        accepted = frozenset(name for name in self.app.tasks if not name.startswith("celery."))
        rt = runtime()
        max_eta = timedelta(seconds=rt.settings.max_eta_seconds)

        def on_task_received(message: Any) -> Any:
            refusal = accept_message(message, accepted, now=rt.now(), max_eta=max_eta)
            if refusal is not None:
                return self._dead_letter(message, refusal)
            try:
                return handle(message)
            except connection_errors:
                raise
            except Exception as exc:
                # A check above missed a shape Celery cannot take: still one outcome.
                error = InvalidTaskMessageError(f"{type(exc).__name__}: {exc}")
                return self._refuse(message, error)

        return on_task_received

    # Celery's own hooks, reached when kombu itself fails on a message (e.g. decompression).
    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self._refuse(message, UndecodableMessageError(f"{type(exc).__name__}: {exc}"))

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._refuse(message, InvalidTaskMessageError(f"{type(exc).__name__}: {exc}"))

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._refuse(message, UnknownTaskError(f"unknown task: {exc}"))

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._refuse(message, InvalidTaskMessageError("not a Celery task message"))

    def _refuse(self, message: Any, error: Exception) -> None:
        self._dead_letter(message, Refusal(error, message_event_id(message)))

    def _dead_letter(self, message: Any, refusal: Refusal) -> None:
        """Translate the decision: store then ack, or (the store away) requeue after a pause,
        without trying the store again while it has just failed (the loop must not block)."""
        failures, rules = self._store_failures, runtime().retry_policy
        decision = decide(
            Failure.PERMANENT,
            attempt=1,
            policy=rules,
            store_failures=failures.now(),
            can_retry=False,
        )
        if isinstance(decision, DeadLetter):
            if _store(message, refusal):
                failures.count = 0
                if not message.acknowledged:
                    message.ack_log_error(log, self.connection_errors)
                return
            decision = decide(
                Failure.PERMANENT,
                attempt=1,
                policy=rules,
                store_failures=failures.failed(),
                can_retry=False,
            )
        if isinstance(decision, Requeue):
            state().health.held_messages += 1
            self.timer.call_after(decision.delay, self._give_back, (message,))

    def _give_back(self, message: Any) -> None:
        """To the end of the queue: the events behind it are not held up by it."""
        state().health.held_messages -= 1
        if not message.acknowledged:
            message.reject_log_error(log, self.connection_errors, requeue=True)


def _body_or_headers(message: Any, headers: dict[str, Any]) -> str:
    """The body as received; a message with none keeps its headers, so it can be told apart."""
    body = dead_letters.body_text(message.body)
    return body or "(no body) headers: " + json.dumps(headers, default=repr, sort_keys=True)


def _store(message: Any, refusal: Refusal) -> bool:
    headers = message.headers if isinstance(message.headers, dict) else {}
    task_name = headers.get("task")
    try:
        rt = runtime()
        letter_id = dead_letters.store(
            rt.new_uow,
            task_name=task_name if isinstance(task_name, str) else "(unknown)",
            event_id=refusal.event_id,
            body=_body_or_headers(message, headers),
            content_type=message.content_type,
            exc=refusal.error,
            attempts=1,
            now=rt.now(),
        )
    except Exception as exc:
        state().health.dead_letter_store.failed(exc)
        log.critical(
            "could not dead-letter a message (%s); it goes back to the queue: %s",
            refusal.reason,
            exc,
            exc_info=True,
        )
        return False
    state().health.dead_letter_store.succeeded()
    if letter_id is not None:  # None: not even a minimal letter stores; logged CRITICAL, ends
        log.error(
            "dead-lettered message task_id=%r as %d: %s",
            headers.get("id"),
            letter_id,
            refusal.error,
        )
    return True
