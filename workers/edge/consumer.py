"""A Celery consumer that accepts every message first (workers/edge/accept.py) and dead-letters
what it refuses, as `decide` says: stored then acked, or requeued while the store is away."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery.worker.consumer import Consumer
from vine import promise

from workers.broker.control_step import GuardedBlueprint
from workers.edge import dead_letters
from workers.edge.accept import Refusal, accept_message, message_event_id
from workers.edge.decide import DeadLetter, Failure, Requeue, decide, store_pause
from workers.errors import (
    InvalidTaskMessageError,
    UndecodableMessageError,
    UnknownTaskError,
)
from workers.runtime.root import runtime, state

log = logging.getLogger(__name__)

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
    # (workers/broker/control_step.py).
    Blueprint = GuardedBlueprint

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
