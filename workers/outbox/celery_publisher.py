"""The outbox relay's way out: follow-on events sent as Celery tasks on their own queues."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from domain import OutboxMessage


class CeleryPublisher:
    """Publishes a follow-on as a Celery task on its queue; the task id is its event_id.

    Given `load_app` instead of an app, it loads the app on its first publish: a process that
    never publishes (a read command) never pays for importing Celery.
    """

    def __init__(self, app: Any = None, *, load_app: Callable[[], Any] | None = None) -> None:
        self._app = app
        self._load_app = load_app

    @property
    def app(self) -> Any:
        if self._app is None and self._load_app is not None:
            self._app = self._load_app()
        return self._app

    def publish(self, message: OutboxMessage) -> None:
        self.app.send_task(
            message.task_name,
            kwargs={"event": message.body},
            task_id=message.event_id,
            queue=message.queue,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2},
        )
