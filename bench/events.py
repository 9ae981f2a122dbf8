"""Incoming events as a publisher builds them from docs/contract.md, and pre-loaded queues.

The bench imports nothing from the product: it speaks the contract, so it measures whatever
code `--code` points at, refactors included.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from celery import Celery

EVENTS_QUEUE = "imagegroups.events"
NOOP_QUEUE = "noop"
TASKS = {
    "catalog.parsed": "imagegroups.catalog_parsed",
    "stage.finished": "imagegroups.stage_finished",
}
ROLES = ["compute", "login"]


@dataclass(frozen=True)
class Group:
    job_id: str
    group_id: str


def groups(count: int, prefix: str = "") -> list[Group]:
    """New jobs and group ids; ids unique per call, so several runs can share a database."""
    prefix = prefix or f"bench-{uuid.uuid4().hex[:6]}"
    return [Group(str(uuid.uuid4()), f"{prefix}-{i}") for i in range(count)]


def envelope(event_type: str, job_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        "job_id": job_id,
        "correlation_id": job_id,
        "payload": payload,
    }


def catalog_parsed(group: Group) -> dict[str, Any]:
    payload = {"image_group_id": group.group_id, "roles": ROLES, "catalog_name": "bench"}
    return envelope("catalog.parsed", group.job_id, payload)


def stage_finished(group: Group, stage: str, outcome: str = "succeeded") -> dict[str, Any]:
    payload = {"stage": stage, "outcome": outcome, "image_group_id": group.group_id}
    return envelope("stage.finished", group.job_id, payload)


def send(client: Celery, event: dict[str, Any], producer: Any = None) -> None:
    """Publish one incoming event as its task on the events queue (task id = event_id)."""
    client.send_task(
        TASKS[event["event_type"]],
        kwargs={"event": event},
        queue=EVENTS_QUEUE,
        task_id=event["event_id"],
        producer=producer,
    )


def preload(client: Celery, events: Iterable[dict[str, Any]]) -> int:
    sent = 0
    with client.producer_or_acquire() as producer:
        for event in events:
            send(client, event, producer)
            sent += 1
    return sent


def preload_noop(client: Celery, count: int) -> int:
    """No-op tasks carrying an event of the same size as a build result."""
    sample = stage_finished(groups(1)[0], "build-image")
    with client.producer_or_acquire() as producer:
        for _ in range(count):
            client.send_task(
                "bench.noop", kwargs={"event": sample}, queue=NOOP_QUEUE, producer=producer
            )
    return count


def park(r: redis.Redis, queue: str, slot: str) -> None:
    """Move a pre-loaded queue aside, so workers can start and get ready before it drains."""
    r.rename(queue, f"bench.parked.{slot}")


def release(r: redis.Redis, queue: str, slot: str) -> None:
    """Put a parked queue back at once (RENAME is atomic): every message is there together."""
    r.rename(f"bench.parked.{slot}", queue)


def event_of(raw: bytes | str) -> dict[str, Any]:
    """The envelope inside a kombu message as Redis holds it (base64 `[args, kwargs, embed]`)."""
    message = json.loads(raw)
    body = message["body"]
    if message.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    _args, kwargs, _embed = json.loads(body)
    event: dict[str, Any] = kwargs["event"]
    return event
