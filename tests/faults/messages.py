"""Raw broker messages, built byte by byte as a careless or hostile publisher could send them."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import redis

EVENTS_QUEUE = "imagegroups.events"
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def task_headers(task: str, task_id: str | None = None, **extra: Any) -> dict[str, Any]:
    """Protocol-2 headers as Celery's own publisher writes them."""
    headers: dict[str, Any] = {
        "lang": "py",
        "task": task,
        "id": task_id or str(uuid.uuid4()),
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": None,
        "parent_id": None,
        "argsrepr": "()",
        "kwargsrepr": "{}",
        "origin": "faults@test",
        "ignore_result": False,
    }
    headers.update(extra)
    return headers


def task_body(event: Any, *, args: Any = (), kwargs: Any = None, embed: Any = None) -> bytes:
    """A protocol-2 body `[args, kwargs, embed]` as JSON."""
    call_kwargs = {"event": event} if kwargs is None else kwargs
    return json.dumps([list(args), call_kwargs, EMBED if embed is None else embed]).encode()


def envelope(
    body: bytes,
    headers: Any,
    *,
    content_type: str = "application/json",
    content_encoding: str = "utf-8",
    properties: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The transport envelope kombu's Redis channel stores in the queue's list."""
    props: dict[str, Any] = {
        "correlation_id": headers.get("id") if isinstance(headers, dict) else None,
        "reply_to": None,
        "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": EVENTS_QUEUE},
        "priority": 0,
        "body_encoding": "base64",
        "delivery_tag": str(uuid.uuid4()),
    }
    props.update(properties or {})
    return {
        "body": base64.b64encode(body).decode("ascii"),
        "content-encoding": content_encoding,
        "content-type": content_type,
        "headers": headers,
        "properties": props,
    }


def push(client: redis.Redis, message: dict[str, Any] | bytes, queue: str = EVENTS_QUEUE) -> None:
    """Put one message in the queue as kombu would (LPUSH; consumers BRPOP the other end)."""
    raw = message if isinstance(message, bytes) else json.dumps(message).encode()
    client.lpush(queue, raw)


def send_event(client: redis.Redis, task: str, event: Any, times: int = 1, **headers: Any) -> str:
    """Publish a well-formed task message `times` times (same task id); returns the task id."""
    task_id = str(event.get("event_id")) if isinstance(event, dict) else str(uuid.uuid4())
    for _ in range(times):
        push(client, envelope(task_body(event), task_headers(task, task_id, **headers)))
    return task_id
