"""A worker on Redis starts only with its fetch and leases engaged: a silent hook is worse
than none.

Both hang on kombu's private code (docs/architecture.md, "Private hooks"): the fetch on
kombu's Redis poller starting a channel's read with `channel._brpop_start()` and handing the
reply to `channel.handlers['BRPOP']` (the transport's atomic fetch and screening live there),
leases on the transport's `register_with_event_loop` being called with the worker's hub. If
either stopped, kombu would pop messages with a window that loses them, a malformed entry
would stop the worker again, or a slow handler's message would be delivered twice, with
nothing to say so. This consumer step checks both once the broker connection is up (and again
after every reconnect) and stops the worker with one line,
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

log = logging.getLogger(__name__)

REFUSAL = "imagegroups worker: cannot start: "
_PROBE_QUEUE = "imagegroups.probe"


class _ProbeClient:
    def __init__(self) -> None:
        self.connection = SimpleNamespace(_sock=object())


class _Probe:
    """A channel that records what kombu's poller asks of it."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.active_queues = [_PROBE_QUEUE]
        self.active_fanout_queues: list[str] = []
        self._in_poll = False
        self.qos = SimpleNamespace(can_consume=lambda: True)
        self.client = _ProbeClient()
        self.handlers = {"BRPOP": lambda **options: self.asked.append("read")}

    def _brpop_start(self, timeout: Any = None) -> None:
        self.asked.append("start")
        self._in_poll = True


def fetching_problem() -> str | None:
    """Run kombu's own poller over a probe channel; None when it starts a read with
    `_brpop_start` and hands the readable socket to `handlers['BRPOP']`."""
    poller: Any = kombu_redis.MultiChannelPoller()  # type: ignore[no-untyped-call]
    probe = _Probe()
    try:
        sock = probe.client.connection._sock
        poller._channels.add(probe)
        poller._chan_to_sock[(probe, probe.client, "BRPOP")] = sock
        poller._fd_to_chan[-1] = (probe, "BRPOP")
        poller.on_poll_start()
        poller.on_readable(-1)
    except Exception as exc:
        return (
            "kombu's Redis poller no longer runs a channel's read as the fetch expects "
            f"({type(exc).__name__}: {exc}); messages could be lost or malformed ones stop "
            "the worker"
        )
    finally:
        poller._channels.clear()
        poller._fd_to_chan.clear()
        poller._chan_to_sock.clear()
        poller.poller.close()
    if probe.asked != ["start", "read"]:
        return (
            "kombu's Redis poller no longer starts a read with _brpop_start and hands the "
            f"reply to handlers['BRPOP'] (it asked {probe.asked}): the atomic fetch and "
            "screening would not run"
        )
    return None


def problem(consumer: Any) -> str | None:
    """Why this consumer must not take events (None: it may). Only a Redis broker is checked:
    the fetch and leases are Redis's; kombu's other transports need neither."""
    connection = consumer.connection
    kind = connection.transport
    if not isinstance(kind, kombu_redis.Transport):
        return None
    if not isinstance(kind, transport.Transport):
        return (
            f"the Redis broker runs on {type(kind).__module__}.{type(kind).__name__}, not "
            f"{transport.TRANSPORT} (broker_transport): no atomic fetch, no screening, no "
            "leases"
        )
    channel = connection.default_channel
    read = getattr(channel.handlers.get("BRPOP"), "__func__", None)
    if read is not transport.Channel._brpop_read:
        return "the Redis channel's reader is not the transport's fetch (handlers['BRPOP'])"
    with channel.conn_or_acquire() as client:
        version = str(client.info("server").get("redis_version", "0"))
    return version_problem(version) or fetching_problem() or lease_problem(consumer)


#: The fetch's RPOP with a count and its BLMOVE wait arrived in Redis 6.2.
OLDEST_REDIS = (6, 2)


def version_problem(version: str) -> str | None:
    """Why a Redis server of this version cannot serve the fetch; None when it can."""
    try:
        found = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        found = ()
    if found >= OLDEST_REDIS:
        return None
    return (
        f"Redis {version} is older than 6.2: the worker's fetch needs RPOP with a count and BLMOVE"
    )


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
    """Once the broker connection is up: the fetch and leases engaged, or the worker stops."""

    requires = ("celery.worker.consumer.connection:Connection",)

    def start(self, c: Any) -> None:
        reason = problem(c)
        if reason is not None:
            refuse(reason)
