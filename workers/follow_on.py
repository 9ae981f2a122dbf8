"""Follow-on events: the requests for the next stage, as outbox messages (docs/contract.md §2)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain import ImageGroup, OutboxMessage, StageName, StageRequest


@dataclass(frozen=True, slots=True)
class FollowOn:
    task_name: str
    queue: str
    event_type: str


FOLLOW_ON: dict[StageName, FollowOn] = {
    StageName.DEPLOY: FollowOn("pipeline.deploy", "pipeline.deploy", "deploy.requested"),
    StageName.PXE_BOOT: FollowOn("pipeline.pxe_boot", "pipeline.pxe_boot", "pxe_boot.requested"),
    StageName.VALIDATE: FollowOn("pipeline.validate", "pipeline.validate", "validate.requested"),
}


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
        "schema_version": 1,
        "occurred_at": at.isoformat(),
        "job_id": group.job_id,
        "causation_id": cause.event_id,
        "payload": payload,
    }
    if cause.correlation_id is not None:
        body["correlation_id"] = cause.correlation_id
    return OutboxMessage(
        event_id=event_id,
        task_name=spec.task_name,
        queue=spec.queue,
        body=body,
        image_group_id=group.id.value,
        created_at=at,
    )
