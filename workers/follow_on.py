"""Follow-on events: the requests for the next stage, as outbox messages (docs/contract.md §2)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain import ImageGroup, OutboxMessage, StageName, StageRequest
from workers.messages import FOLLOW_ON, SCHEMA_VERSION


@dataclass(frozen=True, slots=True)
class Cause:
    """What caused a transition: an incoming event, or an operator's command."""

    event_id: str
    correlation_id: str | None = None


def request_message(
    group: ImageGroup, request: StageRequest, *, cause: Cause, event_id: str, at: datetime
) -> OutboxMessage:
    spec = FOLLOW_ON[request.stage]
    payload: dict[str, Any] = {"image_group_id": group.id.value, "attempt": request.attempt}
    if request.stage is StageName.DEPLOY:
        payload["images"] = [
            {"role": image.role.value, "image_name": image.image_name} for image in group.images
        ]
    body: dict[str, Any] = {
        "event_id": event_id,
        "event_type": spec.event_type,
        "schema_version": SCHEMA_VERSION,
        "occurred_at": at.isoformat(),
        "job_id": group.job_id,
        "causation_id": cause.event_id,
        "payload": payload,
    }
    if cause.correlation_id is not None:
        body["correlation_id"] = cause.correlation_id
    return OutboxMessage(
        event_id=event_id,
        task_name=spec.task,
        queue=spec.queue,
        body=body,
        image_group_id=group.id.value,
        created_at=at,
    )
