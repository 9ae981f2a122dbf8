"""A message is always in a queue or in the unacknowledged hash, and one the hash lost is
given back from the worker's copy.

kombu's BRPOP popped a message and only then, in a second round trip, stored it in the hash:
Redis or the worker killed between the two lost it (the fault tests caught both). The fetch
(workers/broker/transport.py) pops and stores in one script; a Redis restarted from an older
snapshot can still lose the hash entry of a message the worker holds, which the worker's copy
gives back. Both are replayed here over fakeredis.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.unit.test_broker_hooks import QUEUE, a_connection, envelope, fetch, flush, queued_ids
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


def reconnect(ch: Any) -> Any:
    """A new channel that consumes, as Celery's consumer opens after a lost connection."""
    fresh = ch.kombu_connection.channel()
    fresh.basic_consume(QUEUE, False, lambda message: None, "after-reconnect")
    return fresh


def test_a_fetch_whose_reply_is_lost_leaves_its_messages_in_the_hash_for_the_scan(
    channel: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    got: list[Any] = []
    channel.basic_consume(QUEUE, False, got.append, "c")
    channel.client.lpush(QUEUE, envelope("t-popped"))
    client = channel.client
    client.connection = client.connection_pool.get_connection()
    channel._brpop_start()  # Redis runs the fetch ...

    def reply_lost(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("Connection closed by server.")

    with monkeypatch.context() as m:
        m.setattr(type(client), "parse_response", reply_lost)  # ... its reply never arrives
        with pytest.raises(redis.ConnectionError):
            channel._brpop_read()
    assert got == []
    assert channel.client.llen(QUEUE) == 0 and channel.client.hlen("unacked") == 1
    # Held by nobody, so no lease renews it: the visibility scan of any worker gives it back.
    channel.client.zadd("unacked_index", dict.fromkeys(channel.client.hkeys("unacked"), 0))
    channel.qos.restore_visible(num=10)
    assert queued_ids(channel) == ["t-popped"]
    assert channel.client.hlen("unacked") == 0


def test_a_held_message_whose_unacked_entry_redis_lost_is_given_back_on_reconnect(
    channel: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    got: list[Any] = []
    channel.basic_consume(QUEUE, False, got.append, "c")
    for tag in ("t-lost", "t-kept", "t-acked"):
        channel.client.lpush(QUEUE, envelope(tag))
        fetch(channel)
    got[2].ack()
    # Restarted from an AOF that had the pop of t-lost but not its HSET and ZADD:
    lost = got[0].delivery_tag
    assert channel.client.hdel("unacked", lost) == 1
    channel.client.zrem("unacked_index", lost)

    def redis_is_down(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("Error 111 connecting. Connection refused.")

    with monkeypatch.context() as m:
        m.setattr(redis.Redis, "transaction", redis_is_down)  # the closing channel's restore
        with pytest.raises(redis.ConnectionError):
            channel.close()
    assert channel.client.llen(QUEUE) == 0
    reconnect(channel)
    assert sorted(queued_ids(channel)) == ["t-kept", "t-lost"]  # the acked one stays acked
    assert channel.client.hlen("unacked") == 0


def test_a_closing_channel_gives_back_a_held_message_the_hash_lost_when_redis_is_back(
    channel: Any,
) -> None:
    got: list[Any] = []
    channel.basic_consume(QUEUE, False, got.append, "c")
    channel.client.lpush(QUEUE, envelope("t-lost"))
    fetch(channel)
    assert channel.client.hdel("unacked", got[0].delivery_tag) == 1
    channel.close()
    assert queued_ids(channel) == ["t-lost"]


def test_a_close_that_fails_half_way_gives_back_each_held_message_once(
    channel: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    got: list[Any] = []
    channel.basic_consume(QUEUE, False, got.append, "c")
    for tag in ("t-first", "t-second"):
        channel.client.lpush(QUEUE, envelope(tag))
        fetch(channel)
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
    assert len(queued_ids(channel)) == 1  # the first is back already
    reconnect(channel)
    assert sorted(queued_ids(channel)) == ["t-first", "t-second"]  # once each
    assert channel.client.hlen("unacked") == 0
