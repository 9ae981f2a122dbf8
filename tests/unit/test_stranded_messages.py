"""A message Redis has popped but not stored as unacknowledged is given back, not lost.

kombu's BRPOP pops a message and only then, in a second round trip (QoS.append: ZADD and
HSET), stores it in the unacknowledged hash. Redis killed between the two (the fault test
tests/faults/test_crashes.py::test_redis_killed_mid_flow_and_restarted_from_its_aof_loses_nothing
caught it: the append-only file at the kill ended with that RPOP) leaves the message in no
queue and no hash; a Redis restarted from an everysec AOF can likewise keep the pop and lose
the HSET of a message the worker holds. Both are replayed here over fakeredis.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.unit.test_broker_hooks import QUEUE, a_connection, envelope, flush
from workers.runtime.root import state


@pytest.fixture
def channel() -> Iterator[Any]:
    state().stranded.take()
    connection = a_connection(5)
    ch = connection.channel()
    ch.kombu_connection = connection
    ch.client.flushdb()
    yield ch
    connection.release()
    flush(5)
    state().stranded.take()


def pop(ch: Any, got: list[Any]) -> None:
    """kombu's own BRPOP start and read, as its poller runs them."""
    client = ch.client
    client.connection = client.connection_pool.get_connection()
    ch._brpop_start(timeout=1)
    ch._brpop_read()


def queued_tags(ch: Any) -> list[str]:
    return [json.loads(raw)["properties"]["delivery_tag"] for raw in ch.client.lrange(QUEUE, 0, -1)]


def reconnect(ch: Any) -> Any:
    """A new channel that consumes, as Celery's consumer opens after a lost connection."""
    fresh = ch.kombu_connection.channel()
    fresh.basic_consume(QUEUE, False, lambda message: None, "after-reconnect")
    return fresh


def test_a_message_popped_just_before_redis_died_is_given_back_on_reconnect(
    channel: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    got: list[Any] = []
    channel.basic_consume(QUEUE, False, got.append, "c")
    channel.client.lpush(QUEUE, envelope("t-popped"))

    def redis_is_gone(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("Connection closed by server.")

    with monkeypatch.context() as m:
        m.setattr(redis.client.Pipeline, "execute", redis_is_gone)  # QoS.append's MULTI
        with pytest.raises(redis.ConnectionError):
            pop(channel, got)
    assert got == []
    assert channel.client.llen(QUEUE) == 0 and channel.client.hlen("unacked") == 0
    reconnect(channel)
    assert queued_tags(channel) == ["t-popped"]


def test_a_held_message_whose_unacked_entry_redis_lost_is_given_back_on_reconnect(
    channel: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    got: list[Any] = []
    channel.basic_consume(QUEUE, False, got.append, "c")
    for tag in ("t-lost", "t-kept", "t-acked"):
        channel.client.lpush(QUEUE, envelope(tag))
        pop(channel, got)
    got[2].ack()
    # Restarted from an AOF that had the pop of t-lost but not its HSET and ZADD:
    channel.client.hdel("unacked", "t-lost")
    channel.client.zrem("unacked_index", "t-lost")

    def redis_is_down(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("Error 111 connecting. Connection refused.")

    with monkeypatch.context() as m:
        m.setattr(redis.Redis, "transaction", redis_is_down)  # the closing channel's restore
        with pytest.raises(redis.ConnectionError):
            channel.close()
    assert channel.client.llen(QUEUE) == 0
    reconnect(channel)
    assert sorted(queued_tags(channel)) == ["t-kept", "t-lost"]  # the acked one stays acked
    assert channel.client.hlen("unacked") == 0


def test_a_closing_channel_gives_back_a_held_message_the_hash_lost_when_redis_is_back(
    channel: Any,
) -> None:
    got: list[Any] = []
    channel.basic_consume(QUEUE, False, got.append, "c")
    channel.client.lpush(QUEUE, envelope("t-lost"))
    pop(channel, got)
    channel.client.hdel("unacked", "t-lost")
    channel.close()
    assert queued_tags(channel) == ["t-lost"]


def test_a_close_that_fails_half_way_gives_back_each_held_message_once(
    channel: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    got: list[Any] = []
    channel.basic_consume(QUEUE, False, got.append, "c")
    for tag in ("t-first", "t-second"):
        channel.client.lpush(QUEUE, envelope(tag))
        pop(channel, got)
    transaction = redis.Redis.transaction
    calls: list[int] = []

    def down_after_the_first(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) > 1:
            raise redis.ConnectionError("Connection closed by server.")
        return transaction(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(redis.Redis, "transaction", down_after_the_first)
        with pytest.raises(redis.ConnectionError):
            channel.close()
    assert len(queued_tags(channel)) == 1  # the first is back already
    reconnect(channel)
    assert sorted(queued_tags(channel)) == ["t-first", "t-second"]  # once each
    assert channel.client.hlen("unacked") == 0
