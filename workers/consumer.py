"""A Celery consumer that checks every message first and dead-letters what it cannot run."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

from celery.worker.consumer import Consumer
from vine import promise

from workers import dead_letters, protocol
from workers.control_step import GuardedBlueprint
from workers.errors import (
    InvalidTaskMessageError,
    UndecodableMessageError,
    UnknownTaskError,
)
from workers.root import runtime
from workers.worker_health import HEALTH, Backoff

log = logging.getLogger(__name__)

MESSAGE_ERRORS = (InvalidTaskMessageError, UndecodableMessageError, UnknownTaskError)


class DeadLetteringConsumer(Consumer):  # type: ignore[misc]
    """Every message ends acked with an outcome, or dead-lettered and then acked.

    A message is acked only once its dead letter is stored. When the store fails (the
    database is down) the message goes back to the end of its queue after a pause that grows
    while the store keeps failing: it neither spins nor holds a prefetch slot for long, and
    the events behind it keep flowing.
    """

    # Remote control as the policy allows, and no worker-to-worker sync (workers/control_step.py).
    Blueprint = GuardedBlueprint

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._backoff = Backoff()

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
            try:
                protocol.check(
                    message,
                    accepted,
                    now=rt.now(),
                    max_eta=max_eta,
                )
            except MESSAGE_ERRORS as refused:
                return self._dead_letter(message, refused)
            try:
                return handle(message)
            except connection_errors:
                raise
            except Exception as exc:
                # A check above missed a shape Celery cannot take: still one outcome.
                error = InvalidTaskMessageError(f"{type(exc).__name__}: {exc}")
                return self._dead_letter(message, error)

        return on_task_received

    # Celery's own hooks, reached when kombu itself fails on a message (e.g. decompression).
    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self._dead_letter(message, UndecodableMessageError(f"{type(exc).__name__}: {exc}"))

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._dead_letter(message, InvalidTaskMessageError(f"{type(exc).__name__}: {exc}"))

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._dead_letter(message, UnknownTaskError(f"unknown task: {exc}"))

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._dead_letter(message, InvalidTaskMessageError("not a Celery task message"))

    def _dead_letter(self, message: Any, error: Exception) -> None:
        backoff = self._backoff
        if backoff.may_try():
            if _store(message, error):
                backoff.reset()
                if not message.acknowledged:
                    message.ack_log_error(log, self.connection_errors)
                return
            delay = backoff.grow()
        else:
            delay = backoff.delay  # the store failed a moment ago: do not block the loop on it
        HEALTH.held_messages += 1
        self.timer.call_after(delay, self._give_back, (message,))

    def _give_back(self, message: Any) -> None:
        """To the end of the queue: the events behind it are not held up by it."""
        HEALTH.held_messages -= 1
        if not message.acknowledged:
            message.reject_log_error(log, self.connection_errors, requeue=True)


def _body_or_headers(message: Any, headers: dict[str, Any]) -> str:
    """The body as received; a message with none keeps its headers, so it can be told apart."""
    body = dead_letters.body_text(message.body)
    return body or "(no body) headers: " + json.dumps(headers, default=repr, sort_keys=True)


def _store(message: Any, error: Exception) -> bool:
    headers = message.headers if isinstance(message.headers, dict) else {}
    task_name = headers.get("task")
    try:
        rt = runtime()
        letter_id = dead_letters.store(
            rt.new_uow,
            task_name=task_name if isinstance(task_name, str) else "(unknown)",
            event_id=protocol.message_event_id(message),
            body=_body_or_headers(message, headers),
            content_type=message.content_type,
            exc=error,
            attempts=1,
            now=rt.now(),
        )
    except Exception as exc:
        HEALTH.dead_letter_store.failed(exc)
        log.critical(
            "could not dead-letter a message (%s); it goes back to the queue: %s",
            error,
            exc,
            exc_info=True,
        )
        return False
    HEALTH.dead_letter_store.succeeded()
    if letter_id is not None:  # None: not even a minimal letter stores; logged CRITICAL, ends
        log.error("dead-lettered message task_id=%r as %d: %s", headers.get("id"), letter_id, error)
    return True
