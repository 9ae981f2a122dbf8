"""What waits on the broker for `imagegroups health`: each queue's depth, and who consumes it.

Depth comes from a passive queue declaration, which every kombu transport answers (RabbitMQ
with its consumer count too). On Redis a queue is a list per priority step, filled with LPUSH
and taken from its tail, so the tail of each list is the next message out; no broker records
when a message was sent (Celery sets no such header), so the age of the oldest waiting
message is read from its envelope's `occurred_at`. RabbitMQ cannot show a message without
taking it, so there the age is left out.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

from kombu.transport import redis as kombu_redis

from workers.messages import EVENTS_QUEUE, PIPELINE_QUEUES

WATCHED = (EVENTS_QUEUE, *PIPELINE_QUEUES)


def unknown(consumers: Sequence[str] = ()) -> dict[str, Any]:
    """A queue whose depth could not be read (the broker is out of reach)."""
    return {
        "depth": None,
        "oldest_occurred_at": None,
        "oldest_age_seconds": None,
        "broker_consumers": None,
        "consumers": list(consumers),
    }


def read_queues(
    conn: Any, consumers: dict[str, list[str]], names: Iterable[str] = WATCHED
) -> dict[str, dict[str, Any]]:
    """Each queue's depth, its oldest message's `occurred_at` and age, and its consumers:
    the workers that say they consume it, and (RabbitMQ only) the broker's own count."""
    now = datetime.now(UTC)
    found = {}
    for name in names:
        depth, broker_consumers = _declare_passive(conn, name)
        oldest = _oldest_occurred_at(conn, name) if depth else None
        age = None if oldest is None else round((now - oldest).total_seconds(), 3)
        found[name] = {
            "depth": depth,
            "oldest_occurred_at": None if oldest is None else oldest.isoformat(),
            "oldest_age_seconds": age,
            "broker_consumers": broker_consumers,
            "consumers": consumers.get(name, []),
        }
    return found


def _declare_passive(conn: Any, name: str) -> tuple[int, int | None]:
    """(messages, the broker's consumer count or None where it keeps none): a queue that
    does not exist holds nothing (Redis drops an empty list); a fresh channel per queue, as
    AMQP closes the channel that asked for a missing one."""
    channel = conn.channel()
    try:
        _, depth, consumer_count = channel.queue_declare(queue=name, passive=True)
    except conn.channel_errors:
        return 0, None if _is_redis(channel) else 0
    finally:
        with suppress(Exception):
            channel.close()
    return int(depth), None if _is_redis(channel) else int(consumer_count)


def _is_redis(channel: Any) -> bool:
    return isinstance(channel, kombu_redis.Channel)


def _oldest_occurred_at(conn: Any, name: str) -> datetime | None:
    channel: Any = conn.default_channel
    if not _is_redis(channel):
        return None
    keys = [name, *(f"{name}{channel.sep}{step}" for step in channel.priority_steps if step)]
    tails = [channel.client.lindex(key, -1) for key in keys]
    times = [t for t in (occurred_at(tail) for tail in tails if tail is not None) if t]
    return min(times, default=None)


def occurred_at(entry: bytes | str) -> datetime | None:
    """The event's `occurred_at` in a kombu Redis entry (a Celery protocol 2 task whose
    `event` argument is our envelope); None for anything else."""
    try:
        payload = json.loads(entry)
        body = payload["body"]
        if payload.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, _ = json.loads(body)
        event: Any = kwargs.get("event") or (args[0] if args else None)
        stamp = datetime.fromisoformat(event["occurred_at"])
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def consumers_by_queue(replies: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """{queue: [worker, ...]} from the replies to Celery's `active_queues` inspect command;
    a worker that did not answer with its queues (it refused, or errs) consumes nothing."""
    found: dict[str, list[str]] = {}
    for reply in replies:
        for worker, queues in reply.items():
            if not isinstance(queues, list):
                continue
            for queue in queues:
                if isinstance(queue, dict) and isinstance(queue.get("name"), str):
                    found.setdefault(queue["name"], []).append(str(worker))
    return {name: sorted(workers) for name, workers in found.items()}
