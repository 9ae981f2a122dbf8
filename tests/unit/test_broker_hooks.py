"""Canaries: kombu's private Redis code that screening and leases hang on (workers/broker/).

Each runs kombu's own code over an in-process Redis (fakeredis, with Lua) and fails when the
installed kombu or redis-py stops calling the hook: the poller starting a read with
`channel._brpop_start()` and handing the reply to `channel.handlers['BRPOP']` (the atomic
fetch), kombu's consume callback telling the QoS of each message (`qos.append`), one client
per pool (`_create_client`), the pool's parameters (`_connparams`), the unacknowledged
messages in `_qos._delivered`, the poller's channels (`cycle._channels`) and the lease timer
kombu's `register_with_event_loop` gets from Celery's consumer (`cycle._lease_tref`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest
import redis
from celery import Celery
from celery.worker.consumer.consumer import Consumer
from kombu.asynchronous import Hub
from kombu.connection import Connection
from kombu.message import Message
from kombu.transport import memory
from kombu.transport import redis as kombu_redis

from workers.broker import engaged, transport
from workers.messages import MALFORMED_HEADER

QUEUE = "imagegroups.events"


class InProcessChannel(transport.Channel):
    """Our channel, with redis-py talking to fakeredis instead of a socket."""

    connection_class = fakeredis.FakeRedisConnection


class InProcessTransport(transport.Transport):
    Channel = InProcessChannel


def a_connection(db: int, **options: Any) -> Any:
    return Connection(  # type: ignore[no-untyped-call]
        f"redis://canary:1/{db}", transport=InProcessTransport, transport_options=options
    )


def envelope(tag: str) -> bytes:
    return json.dumps(
        {
            "body": "",
            "headers": {"id": tag},
            "content-type": "application/json",
            "content-encoding": "utf-8",
            "properties": {
                "delivery_tag": tag,
                "body_encoding": "base64",
                "delivery_info": {"exchange": "", "routing_key": QUEUE},
            },
        }
    ).encode()


def flush(db: int, **options: Any) -> None:
    """Empty a database once its channels are closed (a closing channel gives back what it
    holds, from a copy when the database no longer has it)."""
    connection = a_connection(db, **options)
    try:
        connection.channel().client.flushdb()
    finally:
        connection.release()


@pytest.fixture
def channel() -> Iterator[Any]:
    connection = a_connection(0)
    ch = connection.channel()
    yield ch
    connection.release()
    flush(0)


def fetch(ch: Any) -> Any:
    """One start and read of the channel, as kombu's poller runs them."""
    client = ch.client
    if getattr(client, "connection", None) is None:
        client.connection = client.connection_pool.get_connection()
    ch._brpop_start(timeout=1)
    return ch._brpop_read()


def deliver_all(ch: Any, entries: list[bytes]) -> list[Message]:
    """Push entries, consume them with one fetch, as kombu's poller runs it."""
    got: list[Message] = []
    ch.basic_consume(QUEUE, False, got.append, "canary")
    for entry in entries:
        ch.client.lpush(ch._q_for_pri(QUEUE, 0), entry)
    assert fetch(ch) is True
    assert len(got) == len(entries)
    return got


def queued_ids(ch: Any, queue: str = QUEUE) -> list[str]:
    """The envelopes waiting in a queue, by the id header `envelope` gives them."""
    return [json.loads(raw)["headers"]["id"] for raw in ch.client.lrange(queue, 0, -1)]


def test_kombu_reads_through_our_fetch_so_a_malformed_entry_is_screened(channel: Any) -> None:
    assert channel.handlers["BRPOP"].__func__ is transport.Channel._brpop_read
    bad, good = deliver_all(channel, [b"not json", envelope("t-good")])
    assert "the queue entry is not JSON" in bad.headers[MALFORMED_HEADER]
    assert bad.content_type == transport.MALFORMED_CONTENT_TYPE
    assert bad.body == b"not json"
    assert MALFORMED_HEADER not in good.headers
    assert good.headers["id"] == "t-good"
    # Stored by the fetch itself, under tags of its own, before kombu saw them.
    stored = channel.client.hgetall(channel.unacked_key)
    assert set(stored) == {bad.delivery_tag.encode(), good.delivery_tag.encode()}
    assert stored[bad.delivery_tag.encode()] == b"\0" + QUEUE.encode() + b"\0not json"
    assert channel.client.zcard(channel.unacked_index_key) == 2
    assert channel.qos.fetched == set(), "every fetched tag reached kombu's QoS"


def test_with_a_global_key_prefix_the_fetch_uses_the_prefixed_keys() -> None:
    connection = a_connection(1, global_keyprefix="canary:")
    ch = connection.channel()
    try:
        [bad] = deliver_all(ch, [b"[1, 2]"])
        assert "JSON list" in bad.headers[MALFORMED_HEADER]
        raw = redis.Redis(connection_pool=ch.client.connection_pool)
        assert set(raw.keys()) == {b"canary:unacked", b"canary:unacked_index"}
        bad.reject(requeue=True)  # type: ignore[no-untyped-call]
        assert raw.lrange(f"canary:{QUEUE}", 0, -1) == [b"[1, 2]"]
    finally:
        connection.release()
        flush(1, global_keyprefix="canary:")


@pytest.mark.parametrize(
    ("version", "refused"), [("7.0.15", False), ("6.2.0", False), ("6.0.16", True), ("x", True)]
)
def test_a_redis_older_than_the_fetch_needs_is_refused_by_name(version: str, refused: bool) -> None:
    problem = engaged.version_problem(version)
    assert (problem is not None) is refused
    assert problem is None or f"Redis {version} is older than 6.2" in problem


def test_the_worker_s_start_check_runs_kombu_s_own_poller() -> None:
    assert engaged.fetching_problem() is None


def test_the_start_check_fails_when_kombu_s_poller_stops_starting_reads_with_brpop_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def starts_elsewhere(self: Any, channel: Any) -> None:
        channel._in_poll = True

    monkeypatch.setattr(kombu_redis.MultiChannelPoller, "_register_BRPOP", starts_elsewhere)
    assert "_brpop_start" in (engaged.fetching_problem() or "")


def test_the_start_check_fails_when_kombu_s_poller_reads_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kombu_redis.MultiChannelPoller, "on_readable", lambda self, fd: None)
    assert "handlers['BRPOP']" in (engaged.fetching_problem() or "")


def test_kombu_keeps_held_messages_in_qos_delivered_and_leases_renew_only_those(
    channel: Any,
) -> None:
    first, second = deliver_all(channel, [envelope("t-1"), envelope("t-2")])
    tags = [first.delivery_tag, second.delivery_tag]
    assert list(channel._qos._delivered) == tags
    index = channel.unacked_index_key
    channel.client.zadd(index, dict.fromkeys(tags, 5))
    connection = channel.connection
    assert channel in connection.cycle._channels
    assert connection.renew_leases() == 2
    assert all(score > 5 for _, score in channel.client.zrange(index, 0, -1, withscores=True))
    first.ack()  # type: ignore[no-untyped-call]
    connection.renew_leases()
    assert [tag for tag, _ in channel.client.zrange(index, 0, -1, withscores=True)] == [
        second.delivery_tag.encode()
    ]


def test_kombu_marks_what_a_closing_channel_gave_back_as_restored(channel: Any) -> None:
    deliver_all(channel, [envelope("t-3")])
    qos = channel._qos
    assert qos._delivered.restored is False
    channel.close()
    assert qos._delivered.restored is True
    assert channel.client.llen(QUEUE) == 1, "kombu did not give the held message back"


def test_kombu_builds_one_client_per_pool_through_create_client(channel: Any) -> None:
    with channel.conn_or_acquire() as one, channel.conn_or_acquire() as two:
        assert one is two and isinstance(one, redis.Redis)
    channel._pool = None  # a reconnect's new pool gets a new client
    with channel.conn_or_acquire() as three:
        assert three is not one


def test_a_pool_built_after_the_connection_let_go_of_its_client_reuses_the_parameters(
    channel: Any,
) -> None:
    assert channel.pool is not None
    channel.connection.client = None  # what Celery's close after a lost connection leaves
    channel._pool = None
    assert channel.pool.connection_kwargs["host"] == "canary"


@pytest.fixture
def no_restore_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """kombu's scan for expired messages takes a Lua lock, which fakeredis cannot run; it is
    kombu's recovery, not the hook under test."""
    monkeypatch.setattr(kombu_redis.QoS, "restore_visible", lambda self, *a, **k: None)


def test_celery_s_consumer_registers_the_transport_with_its_hub_and_the_lease_timer_runs(
    no_restore_scan: None,
) -> None:
    connection = a_connection(2, **{transport.LEASE_OPTION: 7.0})
    hub: Any = Hub()  # type: ignore[no-untyped-call]
    consumer = SimpleNamespace(
        connection_for_read=lambda heartbeat: connection, amqheartbeat=None, hub=hub
    )
    try:
        Consumer.connect(consumer)  # Celery's own connect, as the Connection step calls it
        first = getattr(connection.transport.cycle, transport.LEASE_TIMER)
        assert first in [entry for _eta, _priority, entry in hub.timer.queue]
        assert first.fun.__wrapped__ == connection.transport.renew_leases
        assert connection.transport._ack_loop[0] is hub  # acks wait for a batch in this loop
        Consumer.connect(consumer)  # a reconnect
        assert first.canceled
        assert not getattr(connection.transport.cycle, transport.LEASE_TIMER).canceled
        consumer.connection = connection
        assert engaged.lease_problem(consumer) is None
    finally:
        hub.close()
        connection.release()


def test_celery_s_broker_transport_wins_over_the_url_so_it_follows_the_url() -> None:
    def transport_class(url: str, chosen: str | None) -> type[Any]:
        app = Celery("canary", broker=url, set_as_current=False)
        app.conf.broker_transport = chosen
        return type(app.connection_for_read().transport)

    assert transport_class("redis://canary:1/0", transport.transport_for("redis://x")) is (
        transport.Transport
    )
    assert transport_class("memory://", transport.transport_for("memory://")) is memory.Transport
    # Left at ours, a memory:// URL would still talk Redis: why transport_for follows the URL.
    assert transport_class("memory://", transport.TRANSPORT) is transport.Transport


def test_the_consumer_checks_the_hooks_once_its_broker_connection_is_up() -> None:
    from celery.utils.imports import symbol_by_name

    from workers.broker import control_step

    assert control_step.ENGAGED in control_step.GuardedBlueprint.default_steps
    step = symbol_by_name(control_step.ENGAGED)
    assert step is engaged.Engaged
    assert "celery.worker.consumer.connection:Connection" in step.requires


def test_a_broker_other_than_redis_is_not_held_to_screening_or_leases() -> None:
    connection: Any = Connection("memory://")  # type: ignore[no-untyped-call]
    try:
        assert engaged.problem(SimpleNamespace(connection=connection, hub=None)) is None
    finally:
        connection.release()


def looping(connection: Any) -> Any:
    """The channel's transport registered with an event loop in this thread, as Celery does."""
    hub: Any = Hub()  # type: ignore[no-untyped-call]
    connection._ack_loop = (hub, threading.get_ident())
    return hub


def test_acks_in_the_event_loop_free_the_slot_at_once_and_leave_redis_together(
    channel: Any,
) -> None:
    hub = looping(channel.connection)
    try:
        messages = deliver_all(channel, [envelope(f"t-{i}") for i in range(3)])
        channel.qos.prefetch_count = 3
        assert not channel.qos.can_consume()
        for message in messages:
            message.ack()  # type: ignore[no-untyped-call]
        assert channel.qos.can_consume()
        assert channel.client.hlen(channel.unacked_key) == 3, "removed one by one"
        assert len(hub.timer.queue) == 1, "one removal for the batch"
        hub.fire_timers(min_delay=0, max_delay=0)  # not yet due
        time.sleep(transport.ACK_BATCH_SECONDS)
        hub.fire_timers()
        assert channel.client.hlen(channel.unacked_key) == 0
        assert channel.client.zcard(channel.unacked_index_key) == 0
    finally:
        hub.close()


def test_an_ack_outside_the_event_loop_leaves_at_once(channel: Any) -> None:
    [message] = deliver_all(channel, [envelope("t-now")])
    message.ack()  # type: ignore[no-untyped-call]
    assert channel.client.hlen(channel.unacked_key) == 0


def test_a_closing_channel_removes_the_waiting_acks_and_gives_back_only_the_rest(
    channel: Any,
) -> None:
    hub = looping(channel.connection)
    try:
        done, _held = deliver_all(channel, [envelope("t-done"), envelope("t-held")])
        done.ack()  # type: ignore[no-untyped-call]
        channel.close()
        assert channel.client.hlen(channel.unacked_key) == 0
        assert queued_ids(channel) == ["t-held"], "an acknowledged message came back"
    finally:
        hub.close()
