"""A Celery consumer that dead-letters what Celery would only log and drop."""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer
from kombu.exceptions import ContentDisallowed, DecodeError
from vine import promise

from workers import dead_letters
from workers.bootstrap import runtime, utcnow

log = logging.getLogger(__name__)


class UndecodableMessageError(Exception):
    """The body could not be decoded (not JSON, or a refused serializer such as pickle)."""


class UnknownTaskError(Exception):
    """No task of that name is registered in this worker."""


class InvalidTaskMessageError(Exception):
    """The message is not a well-formed Celery task message."""


class DeadLetteringConsumer(Consumer):  # type: ignore[misc]
    """Each hook stores the message first; only a stored message is acked or rejected.

    If the store fails (database down) the message stays unacked and Redis brings it
    back after the visibility timeout: nothing is lost, and nothing spins on it.
    """

    def create_task_handler(self, promise: Any = promise) -> Any:
        handle = super().create_task_handler(promise)
        connection_errors = tuple(self.connection_errors)

        def on_task_received(message: Any) -> Any:
            # Celery catches only a few errors here; anything else (e.g. a body that is not
            # [args, kwargs, embed]) would escape and stop the consumer for every message.
            try:
                return handle(message)
            except connection_errors:
                raise
            except Exception as exc:
                error = InvalidTaskMessageError(f"{type(exc).__name__}: {exc}")
                if _store(message, error):
                    message.reject_log_error(log, connection_errors)
                return None

        return on_task_received

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        if _store(message, UndecodableMessageError(f"{type(exc).__name__}: {exc}")):
            message.ack()

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        if _store(message, _classify(exc)):
            super().on_invalid_task(body, message, exc)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        task = message.headers.get("task")
        if _store(message, UnknownTaskError(f"unknown task {task!r}: {exc}")):
            super().on_unknown_task(body, message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        error = InvalidTaskMessageError("message without a task name (not protocol 2)")
        if _store(message, error):
            super().on_unknown_message(body, message)


def _classify(exc: Exception) -> Exception:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ContentDisallowed | DecodeError):
        return UndecodableMessageError(text)
    return InvalidTaskMessageError(text)


def _store(message: Any, error: Exception) -> bool:
    headers = message.headers or {}
    body = dead_letters.body_text(message.body)
    try:
        letter_id = dead_letters.store(
            runtime().new_uow,
            task_name=str(headers.get("task") or "(unknown)"),
            event_id=None,
            body=body,
            content_type=message.content_type,
            exc=error,
            attempts=1,
            now=utcnow(),
        )
    except Exception:
        log.critical("could not dead-letter an undecodable message: %s", error, exc_info=True)
        return False
    log.error("dead-lettered message task_id=%s as %d: %s", headers.get("id"), letter_id, error)
    return True
