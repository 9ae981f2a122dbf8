"""The outbox relay's way out: follow-on events sent as Celery tasks on their own queues."""

from __future__ import annotations

from typing import Any

from domain import OutboxMessage


class CeleryPublisher:
    """Publishes a follow-on as a Celery task on its queue; the task id is its event_id."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def publish(self, message: OutboxMessage) -> None:
        self.app.send_task(
            message.task_name,
            kwargs={"event": message.body},
            task_id=message.event_id,
            queue=message.queue,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2},
        )
