"""A worker on Redis starts only with screening and leases engaged: a silent hook is worse
than none.

Both hang on kombu's private code (docs/architecture.md, "Private hooks"): screening on its
Redis channel reading every BRPOP reply through `client.parse_response(conn, 'BRPOP')`,
leases on the transport's `register_with_event_loop` being called with the worker's hub. If
either stopped, a malformed entry would stop the worker again and a slow handler's message
would be delivered twice, with nothing to say so. This consumer step checks both once the
broker connection is up (and again after every reconnect) and stops the worker with one line,
`imagegroups worker: cannot start: <reason>`, and exit status 1.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

from celery import bootsteps
from celery.exceptions import WorkerShutdown
from kombu.transport import redis as kombu_redis

from workers.broker import transport
from workers.messages import MALFORMED_HEADER

log = logging.getLogger(__name__)

REFUSAL = "imagegroups worker: cannot start: "
_PROBE_QUEUE = "imagegroups.probe"


class _BrpopReply:
    """A redis-py client whose one BRPOP reply is an entry no kombu envelope."""

    connection = None

    def parse_response(self, connection: Any, command_name: Any, **options: Any) -> Any:
        return (f"{_PROBE_QUEUE}{kombu_redis.Channel.sep}0".encode(), b"not an envelope")


class _ScreenedReply(transport.Screening, _BrpopReply):
    pass


def screening_problem() -> str | None:
    """Run kombu's own BRPOP reader over a screening client; None when the stand-in came out."""
    delivered: list[Any] = []
    channel = SimpleNamespace(
        client=_ScreenedReply(),
        connection=SimpleNamespace(_deliver=lambda message, queue: delivered.append(message)),
        sep=kombu_redis.Channel.sep,
        connection_errors=(),
        _queue_cycle=SimpleNamespace(rotate=lambda queue: None),
        _in_poll=None,
        _flush_brpop_reauth=lambda: None,
    )
    read: Any = kombu_redis.Channel._brpop_read
    try:
        read(channel)
    except Exception as exc:
        return (
            "kombu's Redis channel no longer reads a BRPOP reply as the screening expects "
            f"({type(exc).__name__}: {exc}); malformed queue entries would stop the worker"
        )
    headers = delivered[0].get("headers") if delivered else None
    if not isinstance(headers, dict) or MALFORMED_HEADER not in headers:
        return (
            "kombu's Redis channel no longer reads BRPOP replies through "
            "client.parse_response: malformed queue entries would not be screened"
        )
    return None


def problem(consumer: Any) -> str | None:
    """Why this consumer must not take events (None: it may). Only a Redis broker is checked:
    screening and leases are Redis's; kombu's other transports need neither."""
    connection = consumer.connection
    kind = connection.transport
    if not isinstance(kind, kombu_redis.Transport):
        return None
    if not isinstance(kind, transport.Transport):
        return (
            f"the Redis broker runs on {type(kind).__module__}.{type(kind).__name__}, not "
            f"{transport.TRANSPORT} (broker_transport): no screening, no leases"
        )
    client = connection.default_channel.Client
    if not issubclass(getattr(client, "func", client), transport.Screening):
        return "the Redis channel's client does not screen BRPOP replies"
    return screening_problem() or lease_problem(consumer)


def lease_problem(consumer: Any) -> str | None:
    every = consumer.connection.transport_options.get(transport.LEASE_OPTION)
    if not every:
        return f"broker_transport_options has no {transport.LEASE_OPTION}: no leases"
    if consumer.hub is None:
        return "the consumer runs without an event loop, so no lease renewal is scheduled"
    tref = getattr(consumer.connection.transport.cycle, transport.LEASE_TIMER, None)
    queued = {id(entry) for _eta, _priority, entry in consumer.hub.timer.queue}
    if tref is None or tref.canceled or id(tref) not in queued:
        return (
            "kombu did not register the transport with the worker's event loop "
            "(register_with_event_loop): leases would not be renewed"
        )
    return None


def refuse(reason: str) -> None:
    """Stop the worker the way Celery stops it for an unrecoverable broker: exit status 1."""
    log.critical("%s%s", REFUSAL, reason)
    raise WorkerShutdown(1)


class Engaged(bootsteps.StartStopStep):  # type: ignore[misc]
    """Once the broker connection is up: screening and leases engaged, or the worker stops."""

    requires = ("celery.worker.consumer.connection:Connection",)

    def start(self, c: Any) -> None:
        reason = problem(c)
        if reason is not None:
            refuse(reason)
