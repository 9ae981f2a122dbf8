"""The fetch pops messages and stores them as unacknowledged in one step
(workers/broker/transport.py), over fakeredis running its Lua script."""

from __future__ import annotations

import json
from collections.abc import Iterator
from queue import Empty
from typing import Any

import pytest
import redis

from tests.unit.test_broker_hooks import (
    QUEUE,
    a_connection,
    envelope,
    fetch,
    flush,
    queued_ids,
)
from workers.messages import MALFORMED_HEADER


@pytest.fixture
def channel() -> Iterator[Any]:
    connection = a_connection(6)
    ch = connection.channel()
    ch.client.flushdb()
    yield ch
    connection.release()
    flush(6)


def consuming(ch: Any) -> list[Any]:
    got: list[Any] = []
    ch.basic_consume(QUEUE, False, got.append, "fetch")
    return got


def push(ch: Any, *ids: str, queue: str = QUEUE) -> None:
    for one in ids:
        ch.client.lpush(queue, envelope(one))


def test_a_fetch_takes_at_most_the_prefetch_credit_left_oldest_first(channel: Any) -> None:
    got = consuming(channel)
    channel.qos.prefetch_count = 3
    push(channel, *(f"m-{i}" for i in range(5)))
    assert fetch(channel) is True
    assert [m.headers["id"] for m in got] == ["m-0", "m-1", "m-2"]
    assert queued_ids(channel) == ["m-4", "m-3"]
    assert channel.client.hlen(channel.unacked_key) == 3
    assert not channel.qos.can_consume()
    got[0].ack()
    assert fetch(channel) is True
    assert [m.headers["id"] for m in got] == ["m-0", "m-1", "m-2", "m-3"]


def test_an_empty_fetch_is_followed_by_a_wait_that_takes_nothing(channel: Any) -> None:
    got = consuming(channel)
    with pytest.raises(Empty):
        fetch(channel)  # nothing queued
    assert channel._fetch_next is False
    push(channel, "m-1", "m-2")
    with pytest.raises(Empty):
        fetch(channel)  # the wait: it returns once a list has entries, and pops none
    assert got == [] and queued_ids(channel) == ["m-2", "m-1"]
    assert channel.client.hlen(channel.unacked_key) == 0
    assert fetch(channel) is True
    assert [m.headers["id"] for m in got] == ["m-1", "m-2"]


def test_a_wait_that_times_out_is_followed_by_a_fetch_of_every_list(channel: Any) -> None:
    got = consuming(channel)
    with pytest.raises(Empty):
        fetch(channel)
    # A priority list: the wait watches the queue's own list only ...
    channel.client.lpush(channel._q_for_pri(QUEUE, 9), envelope("urgent"))
    client = channel.client
    channel._brpop_start(timeout=0.05)
    with pytest.raises(Empty):
        channel._brpop_read()
    assert client.llen(channel._q_for_pri(QUEUE, 9)) == 1
    # ... and the fetch after it looks at them all.
    assert fetch(channel) is True
    assert [m.headers["id"] for m in got] == ["urgent"]


def test_entries_a_publisher_gave_the_same_delivery_tag_are_held_apart(channel: Any) -> None:
    got = consuming(channel)
    channel.client.lpush(QUEUE, envelope("same"), envelope("same"))
    assert fetch(channel) is True
    assert len({m.delivery_tag for m in got}) == 2
    assert channel.client.hlen(channel.unacked_key) == 2
    got[0].ack()
    channel.close()  # gives back what it holds: the other one, not lost with the first's ack
    assert queued_ids(channel) == ["same"]


def test_a_fetched_envelope_given_back_is_marked_redelivered_as_it_came(channel: Any) -> None:
    got = consuming(channel)
    push(channel, "m-1")
    fetch(channel)
    got[0].reject(requeue=True)
    [raw] = channel.client.lrange(QUEUE, 0, -1)
    back = json.loads(raw)
    original = json.loads(envelope("m-1"))
    assert back["headers"] == {**original["headers"], "redelivered": True}
    assert back["properties"]["delivery_tag"] == original["properties"]["delivery_tag"]
    assert back["properties"]["delivery_info"]["redelivered"] is True
    assert channel.client.hlen(channel.unacked_key) == 0


def test_a_delivery_that_fails_mid_fetch_gives_the_rest_back_at_once(channel: Any) -> None:
    delivered: list[Any] = []

    def fails_on_the_second(message: Any) -> None:
        delivered.append(message)
        if len(delivered) == 2:
            raise RuntimeError("the consumer broke")

    channel.basic_consume(QUEUE, False, fails_on_the_second, "fetch")
    push(channel, "m-1", "m-2", "m-3", "m-4")
    with pytest.raises(RuntimeError):
        fetch(channel)
    assert [m.headers["id"] for m in delivered] == ["m-1", "m-2"]
    assert sorted(queued_ids(channel)) == ["m-3", "m-4"]  # not left for the visibility timeout
    held = {m.delivery_tag.encode() for m in delivered}
    assert set(channel.client.hkeys(channel.unacked_key)) == held
    assert channel.qos.fetched == set()


def test_an_entry_kombu_s_json_cannot_decode_is_screened_not_raised(channel: Any) -> None:
    got = consuming(channel)
    entry = json.loads(envelope("tagged"))
    entry["headers"]["eta"] = {"__type__": "datetime", "__value__": "soon"}  # kombu's tagged value
    channel.client.lpush(QUEUE, json.dumps(entry))
    assert fetch(channel) is True
    assert "kombu cannot decode" in got[0].headers[MALFORMED_HEADER]


def test_a_no_ack_consumer_s_entries_are_popped_and_not_kept(channel: Any) -> None:
    # Celery's event receivers (Flower) and gossip consume so: nothing would ever ack them.
    got: list[Any] = []
    channel.basic_consume(QUEUE, True, got.append, "events")
    push(channel, "e-1", "e-2")
    assert fetch(channel) is True
    assert [m.headers["id"] for m in got] == ["e-1", "e-2"]
    assert channel.client.hlen(channel.unacked_key) == 0
    assert channel.client.zcard(channel.unacked_index_key) == 0
    assert channel.qos.fetched == set()


def test_a_priority_kombu_could_not_give_back_makes_the_entry_a_stand_in(channel: Any) -> None:
    got = consuming(channel)
    entry = json.loads(envelope("endless"))
    entry["properties"]["priority"] = float("inf")
    channel.client.lpush(QUEUE, json.dumps(entry))  # Python's JSON writes Infinity
    fetch(channel)
    assert "priority is not a finite number" in got[0].headers[MALFORMED_HEADER]
    got[0].reject(requeue=True)
    assert channel.client.llen(QUEUE) == 1  # given back as it came, not dropped


def test_a_fetch_whose_reply_waits_is_leased_like_the_messages_held(channel: Any) -> None:
    consuming(channel)
    push(channel, "m-1", "m-2")
    client = channel.client
    client.connection = client.connection_pool.get_connection()
    channel._brpop_start()  # stored by Redis; the reply not read yet (credit fell meanwhile)
    other: Any = redis.Redis(connection_pool=client.connection_pool)  # not the pending one
    index = channel.unacked_index_key
    tags = [tag for tag, _ in other.zrange(index, 0, -1, withscores=True)]
    other.zadd(index, dict.fromkeys(tags, 5))
    channel.connection.renew_leases()
    assert all(score > 5 for _, score in other.zrange(index, 0, -1, withscores=True))
    assert other.zcard(index) == 2, "leases add no tag the fetch did not store"
    assert channel._brpop_read() is True
    assert channel._in_flight is None
