"""The contract's envelope (docs/contract.md §2), for the follow-ons the worker writes and
the incoming events a publisher sends: built and sent as one would (CLI, simulator, demo, tests)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from workers.messages import (
    CATALOG_PARSED,
    EVENTS_QUEUE,
    SCHEMA_VERSION,
    STAGE_FINISHED,
    TASK_FOR_TYPE,
)


def envelope(
    event_type: str,
    job_id: str,
    payload: dict[str, Any],
    *,
    event_id: str | None = None,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": event_id or str(uuid.uuid4()),
        "event_type": event_type,
        "schema_version": SCHEMA_VERSION,
        "occurred_at": (at or datetime.now(UTC)).isoformat(),
        "job_id": job_id,
        "payload": payload,
    }
    if correlation_id is not None:
        body["correlation_id"] = correlation_id
    if causation_id is not None:
        body["causation_id"] = causation_id
    return body


def catalog_parsed(
    job_id: str,
    image_group_id: str,
    roles: list[str],
    role_images: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    payload: dict[str, Any] = {"image_group_id": image_group_id, "roles": roles}
    if role_images:
        payload["role_images"] = role_images
    for key in ("catalog_name", "catalog_version"):
        value = extra.pop(key, None)
        if value is not None:
            payload[key] = value
    return envelope(CATALOG_PARSED.event_type, job_id, payload, **extra)


def stage_finished(
    job_id: str,
    stage: str,
    outcome: str,
    *,
    image_group_id: str | None = None,
    attempt: int | None = None,
    request_event_id: str | None = None,
    detail: dict[str, Any] | None = None,
    error_code: str | None = None,
    error_summary: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    payload: dict[str, Any] = {"stage": stage, "outcome": outcome}
    optional = {
        "image_group_id": image_group_id,
        "attempt": attempt,
        "request_event_id": request_event_id,
        "result_detail": detail,
        "error_code": error_code,
        "error_summary": error_summary,
    }
    payload.update({k: v for k, v in optional.items() if v is not None})
    return envelope(STAGE_FINISHED.event_type, job_id, payload, **extra)


def send(app: Any, event: dict[str, Any], **options: Any) -> str:
    """Send an incoming event as its Celery task on the events queue; returns the event_id."""
    app.send_task(
        TASK_FOR_TYPE[event["event_type"]],
        kwargs={"event": event},
        queue=EVENTS_QUEUE,
        **options,
    )
    return str(event["event_id"])
