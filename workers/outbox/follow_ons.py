"""Follow-on events: the requests for the next stage, as outbox messages (docs/contract.md §2).

Built from the StageRequested a group recorded, by the unit of work at commit (it is handed
a FollowOns by the composition root), never by a handler.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from domain import ImageGroup, OutboxMessage, StageName, StageRequested
from workers.messages import FOLLOW_ON
from workers.outbox.envelopes import envelope


def _uuid4() -> str:
    return str(uuid.uuid4())


class FollowOns:
    """Turns a stage request into the follow-on that asks for it, with an id of its own."""

    def __init__(self, new_id: Callable[[], str] = _uuid4) -> None:
        self.new_id = new_id

    def __call__(self, group: ImageGroup, requested: StageRequested) -> OutboxMessage:
        return request_message(group, requested, event_id=self.new_id())


def request_message(
    group: ImageGroup, requested: StageRequested, *, event_id: str
) -> OutboxMessage:
    """`deploy.requested`, `pxe_boot.requested` or `validate.requested`; its causation is
    the transition's event, its time the transition's."""
    spec = FOLLOW_ON[requested.stage]
    payload: dict[str, Any] = {"image_group_id": group.id.value, "attempt": requested.attempt}
    if requested.stage is StageName.DEPLOY:
        payload["images"] = [
            {"role": image.role.value, "image_name": image.image_name} for image in group.images
        ]
    body = envelope(
        spec.event_type,
        group.job_id,
        payload,
        event_id=event_id,
        correlation_id=requested.correlation_id,
        causation_id=requested.event_id,
        at=requested.at,
    )
    return OutboxMessage(
        event_id=event_id,
        task_name=spec.task,
        queue=spec.queue,
        body=body,
        image_group_id=group.id.value,
        created_at=requested.at,
    )
