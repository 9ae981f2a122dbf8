"""kombu's Redis transport, hardened, with leases on the messages a worker holds.

Leases: Redis gives an unacknowledged message to another worker once it is older than the
visibility timeout, whether or not its worker is alive. Every worker here renews the messages
it holds (prefetched, waiting for a retry countdown, or running) every quarter of the timeout,
so only a dead worker's messages expire: the timeout can be short (fast recovery after a host
crash) without long countdowns or slow handlers being delivered twice.

Screening: a malformed queue entry becomes a message we dead-letter.

kombu pops an entry off the queue's list and builds its message from it before any consumer
code runs. An entry that is not a kombu envelope (not JSON, headers that are not an object,
no delivery tag...) raises there, which stops the whole worker, and the popped entry is lost.
Here every popped entry is screened first: a malformed one is replaced by a well-formed
stand-in carrying the raw entry as its body and the reason in a header, so the consumer
dead-letters it (workers/edge/accept.py) like any other bad message.

Acks that leave for Redis together: one round trip for every message acknowledged within
ACK_BATCH_SECONDS, instead of one per message (the QoS below).

Copies: kombu pops a message (BRPOP), then stores it in the unacknowledged hash (QoS.append).
Redis killed between the two, or restarted from an AOF that kept the pop only, leaves it in
this process alone: it is kept with a copy, given back from the copy when the hash has none.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

from workers.messages import MALFORMED_HEADER
from workers.runtime.root import state

log = logging.getLogger(__name__)

#: How long an acknowledged message stays in kombu's unacked hash and index, waiting to be
#: removed with the others acknowledged meanwhile: one Redis round trip for all of them.
ACK_BATCH_SECONDS = 0.01


def _copy(message: Any) -> list[Any]:
    """What kombu's unacknowledged hash keeps of a message: envelope, exchange, routing key."""
    info = message.delivery_info
    return [message._raw, info["exchange"], info["routing_key"]]


def _kept(copy: Any) -> Callable[[], Any]:
    """A copy kept at a close, as give_back asks for it."""
    return lambda: copy


def remove_acked(client: Any, qos: Any, tags: list[str]) -> None:
    """Acknowledged messages out of kombu's unacked hash and index, in one round trip."""
    pipe = client.pipeline()
    pipe.zrem(qos.unacked_index_key, *tags)
    pipe.hdel(qos.unacked_key, *tags)
    pipe.execute()


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS, whose acks leave for Redis together.

    kombu removes an acknowledged message from its unacked hash and index with a blocking
    round trip per ack. In the event loop, an ack here ends the message for kombu at once (its
    prefetch slot is free, leases pass it over) and its removal waits at most
    ACK_BATCH_SECONDS to go with the others in one pipeline. Whatever gives messages back
    (a closing channel) removes the waiting ones first, so no acknowledged message comes back;
    a worker killed meanwhile leaves them, and they come back after the visibility timeout
    like a message whose ack was lost (the inbox knows the event: applied once)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._acked: list[str] = []  # acknowledged, still in Redis
        self._acks_due: Any = None  # the timer entry of their removal
        # What the closing pass (restore_unacked) gave back, so a close that fails part-way
        # keeps only the rest; None outside it, so a requeue leaves nothing behind.
        self.given_back: set[str] | None = None

    def ack(self, delivery_tag: Any) -> None:
        loop = getattr(self.channel.connection, "_ack_loop", None)
        if loop is None or threading.get_ident() != loop[1]:
            # No event loop, or not its thread: at once.
            super().ack(delivery_tag)  # type: ignore[no-untyped-call]
            return
        self._acked.append(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]
        if self._acks_due is None:
            self._acks_due = loop[0].call_later(ACK_BATCH_SECONDS, self._flush_due)

    def _flush_due(self) -> None:
        self._acks_due = None
        try:
            self.flush_acks()
        except self.channel.connection_errors:
            # Kept: the next ack's batch, or the channel's close, tries them again.
            log.debug("removing acknowledged messages failed", exc_info=True)

    def flush_acks(self) -> None:
        """Remove every acknowledged message still in Redis; kept when Redis fails."""
        tags, self._acked = self._acked, []
        if not tags:
            return
        try:
            with self.channel.conn_or_acquire() as client:
                remove_acked(client, self, tags)
        except BaseException:
            self._acked[:0] = tags
            raise

    def take_acked(self) -> list[str]:
        """The acknowledged messages still in Redis, now someone else's to remove."""
        if self._acks_due is not None:
            self._acks_due.cancel()
            self._acks_due = None
        tags, self._acked = self._acked, []
        return tags

    def append(self, message: Any, delivery_tag: str) -> None:
        try:
            super().append(message, delivery_tag)  # type: ignore[no-untyped-call]
        except self.channel.connection_errors:
            # Popped off the queue, not in the unacknowledged hash: only this process has it.
            state().stranded.keep([(delivery_tag, _copy(message))])
            raise

    def restore_by_tag(self, tag: Any, client: Any = None, leftmost: bool = False) -> None:
        # kombu gives back only the hash's copy; a held, unacknowledged message's is as good,
        # read on each try of the transaction (an ack from another thread may land meanwhile).
        def copy() -> Any:
            message = None if tag in self._dirty else self._delivered.get(tag)
            return message and _copy(message)

        self.channel.give_back(tag, copy, client=client, leftmost=leftmost)
        if self.given_back is not None:
            self.given_back.add(tag)

    def restore_unacked(self, client: Any = None) -> None:
        self.flush_acks()  # an acknowledged message must not come back
        # Nor one whose removal failed: kombu's restore reads _delivered, acked ones included.
        self._flush()  # type: ignore[no-untyped-call]
        self.given_back = set()
        super().restore_unacked(client)  # type: ignore[no-untyped-call]


#: The transport option that turns leases on: seconds between renewals.
LEASE_OPTION = "imagegroups_lease_renewal_interval"

#: Where the transport's poller keeps the renewal's timer entry (workers/broker/engaged.py).
LEASE_TIMER = "_lease_tref"

#: kombu's name for this transport.
TRANSPORT = "workers.broker.transport:Transport"

MALFORMED_CONTENT_TYPE = "application/x-malformed-envelope"


def transport_for(broker_url: str) -> str | None:
    """This transport for a Redis URL; None (kombu's pick by the URL's scheme) for any other.
    Celery's `broker_transport` wins over the URL's scheme, so it must follow the URL."""
    return TRANSPORT if broker_url.split("://", 1)[0] in ("redis", "rediss") else None


def envelope_problem(payload: Any) -> str | None:
    """What keeps kombu from building a message out of `payload`; None when nothing does."""
    if not isinstance(payload, dict):
        return f"the queue entry is JSON {type(payload).__name__}, not a kombu envelope"
    props = payload.get("properties")
    if not isinstance(props, dict):
        return "the envelope has no 'properties' object"
    if not isinstance(props.get("delivery_tag"), str):
        return "the envelope's properties have no string 'delivery_tag'"
    info = props.get("delivery_info")
    if not isinstance(info, dict) or not all(
        isinstance(info.get(key), str) for key in ("exchange", "routing_key")
    ):
        return "the envelope's delivery_info needs string 'exchange' and 'routing_key'"
    headers = payload.get("headers")
    if not isinstance(headers, dict):
        # kombu writes `redelivered` into them when it gives the entry back (a crash, a
        # requeue): without an object there it drops the entry instead.
        return f"the envelope's headers are {type(headers).__name__}, not an object"
    for key in ("content-type", "content-encoding"):
        if payload.get(key) is not None and not isinstance(payload.get(key), str):
            return f"the envelope's {key!r} is not a string"
    return _body_problem(payload.get("body"), props.get("body_encoding"))


def _body_problem(body: Any, encoding: Any) -> str | None:
    if body is not None and not isinstance(body, str):
        return f"the envelope's body is {type(body).__name__}, not a string"
    if encoding not in (None, "base64"):
        return f"unknown body_encoding {encoding!r}"
    if body and encoding == "base64":
        try:
            base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return "the envelope's body is not valid base64"
    return None


def _routed_here(payload: dict[str, Any], queue: str) -> bool:
    info = payload["properties"]["delivery_info"]
    return info["routing_key"] == queue and info["exchange"] in ("", queue)


def _route_here(payload: dict[str, Any], queue: str) -> bytes:
    """The entry, addressed to the queue it came from. Its delivery_info is where a retry is
    published and where kombu gives it back after a crash: a publisher must not pick that
    (a queue nobody consumes would take the event without an outcome)."""
    info = payload["properties"]["delivery_info"]
    payload["properties"]["delivery_info"] = {**info, "exchange": "", "routing_key": queue}
    return json.dumps(payload).encode()


def screen(raw: bytes, queue: str) -> bytes:
    """The entry itself when kombu can read it, else a stand-in that says why it cannot."""
    payload: Any = None
    try:
        payload = json.loads(raw)
        problem = envelope_problem(payload)
    except ValueError as exc:  # not JSON, or not UTF-8
        problem = f"the queue entry is not JSON: {exc}"
    if problem is None:
        return raw if _routed_here(payload, queue) else _route_here(payload, queue)
    stand_in = {
        "body": base64.b64encode(raw).decode("ascii"),
        "content-type": MALFORMED_CONTENT_TYPE,
        "content-encoding": "binary",
        "headers": {MALFORMED_HEADER: problem},
        "properties": {
            "delivery_tag": str(uuid.uuid4()),
            "body_encoding": "base64",
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
        },
    }
    return json.dumps(stand_in).encode()


class Screening:
    """A Redis client whose BRPOP replies are screened before kombu reads them."""

    sep = kombu_redis.Channel.sep

    def parse_response(self, connection: Any, command_name: Any, **options: Any) -> Any:
        reply = super().parse_response(connection, command_name, **options)  # type: ignore[misc]
        if command_name == "BRPOP" and reply:
            key, item = reply
            queue = (key.decode() if isinstance(key, bytes) else str(key)).rsplit(self.sep, 1)[0]
            return key, screen(item, queue)
        return reply


class ScreeningRedis(Screening, redis.Redis):
    pass


class ScreeningPrefixedRedis(Screening, kombu_redis.PrefixedStrictRedis):
    pass


class Channel(kombu_redis.Channel):
    _last_params: dict[bool, dict[str, Any]]
    QoS = QoS

    def _get_client(self) -> Any:
        client = super()._get_client()  # type: ignore[no-untyped-call]
        if isinstance(client, functools.partial):  # global_keyprefix set
            return functools.partial(ScreeningPrefixedRedis, **client.keywords)
        return ScreeningRedis

    def _create_client(self, asynchronous: bool = False) -> Any:
        # kombu builds a new redis client for every publish, event, ack and restore, and a
        # redis-py client is costly to build (a fifth of the consumer's time per event). One
        # per pool is enough: a client is thread-safe, and each command takes a connection
        # from the pool and gives it back. A new pool (after a reconnect) gets a new client.
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[no-untyped-call]
        pool = self.pool
        cached = getattr(self, "_client_for_pool", None)
        if cached is None or cached[0] is not pool:
            cached = (pool, super()._create_client(asynchronous=False))  # type: ignore[no-untyped-call]
            self._client_for_pool = cached
        return cached[1]

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        # After a lost connection, Celery closes the kombu Connection (which lets go of the
        # transport's client) before the channel, whose close then needs a Redis client to
        # give back its unacknowledged messages: kombu raises AttributeError there, which
        # stops the worker. The channel's own earlier parameters are as good.
        if self.connection.client is None and asynchronous in self._remembered():
            return dict(self._remembered()[asynchronous])
        params: dict[str, Any] = super()._connparams(asynchronous)  # type: ignore[no-untyped-call]
        self._remembered()[asynchronous] = dict(params)
        return params

    def _remembered(self) -> dict[bool, dict[str, Any]]:
        if not hasattr(self, "_last_params"):
            self._last_params = {}
        return self._last_params

    def close(self) -> None:
        # kombu gives a closing channel's unacknowledged messages back to the queue. When
        # Redis is down that fails, and they would wait for the visibility timeout (minutes)
        # although this worker is alive: keep them (tags, copies) and give them back on
        # reconnect. Acknowledged ones are not held: their removal goes first, or waits for
        # the next channel that consumes when Redis refuses it.
        qos: Any = self._qos
        acked: list[str] = []
        if qos is not None:
            try:
                qos.flush_acks()
            except self.connection_errors:
                acked = qos.take_acked()
        restored = qos is None or getattr(qos._delivered, "restored", False)
        delivered = {} if restored else qos._delivered
        held = [(tag, _copy(m)) for tag, m in delivered.items() if tag not in qos._dirty]
        state().stranded_acks.keep(acked)
        try:
            super().close()  # type: ignore[no-untyped-call]
        except self.connection_errors:
            # The next channel that consumes gives them back (basic_consume); the tags are
            # the process's, in its runtime: a reconnect builds a new transport.
            given_back = (qos.given_back if qos is not None else None) or set()
            state().stranded.keep([(tag, copy) for tag, copy in held if tag not in given_back])
            raise

    def renew_leases(self) -> int:
        qos = self._qos
        held = [] if qos is None else list(qos._delivered)
        if held:
            now = time.time()
            with self.conn_or_acquire() as client:
                # XX: a message acknowledged meanwhile is gone from the index and stays gone.
                client.zadd(self.unacked_index_key, dict.fromkeys(held, now), xx=True)
        return len(held)

    def give_back(
        self, tag: Any, copy: Callable[[], Any], client: Any = None, leftmost: bool = False
    ) -> None:
        """The message back in its queue from the unacknowledged hash, else from `copy()`
        (asked on each try: WATCH retries the transaction when the hash changes)."""

        def transaction(pipe: Any) -> None:
            stored = pipe.hget(self.unacked_key, tag)
            pipe.multi()
            self.qos._remove_from_indices(tag, pipe)
            found = loads(bytes_to_str(stored)) if stored else copy()  # type: ignore[no-untyped-call]
            if found:
                payload, exchange, routing_key = found
                self._do_restore_message(payload, exchange, routing_key, pipe, leftmost)  # type: ignore[no-untyped-call]

        with self.conn_or_acquire(client) as conn:
            conn.transaction(transaction, self.unacked_key)

    def basic_consume(self, *args: Any, **kwargs: Any) -> Any:
        consumer = super().basic_consume(*args, **kwargs)  # type: ignore[no-untyped-call]
        acked = state().stranded_acks.take()
        if acked:
            try:
                with self.conn_or_acquire() as client:
                    remove_acked(client, self.qos, acked)
            except self.connection_errors:
                state().stranded_acks.keep(acked)
                raise
        once: dict[str, Any] = {}  # a tag kept twice is given back once
        for tag, copy in state().stranded.take():
            once[tag] = once.get(tag) or copy
        entries = list(once.items())
        for position, (tag, copy) in enumerate(entries):
            try:  # one acknowledged or given back since the close comes again (deduped)
                self.give_back(tag, _kept(copy))
            except self.connection_errors:
                state().stranded.keep(entries[position:])
                raise
        return consumer


class Transport(kombu_redis.Transport):
    Channel = Channel

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        super().register_with_event_loop(connection, loop)  # type: ignore[no-untyped-call]
        # Acks wait for a batch only in this loop's thread (QoS, above).
        self._ack_loop = (loop, threading.get_ident())
        every = connection.client.transport_options.get(LEASE_OPTION)
        cycle: Any = self.cycle
        old = getattr(cycle, LEASE_TIMER, None)
        if old is not None:
            old.cancel()  # a reconnect registers again
        if every:
            setattr(cycle, LEASE_TIMER, loop.call_repeatedly(every, self.renew_leases))

    def renew_leases(self) -> int:
        """Mark every message this worker holds as seen now; returns how many."""
        renewed = 0
        cycle: Any = self.cycle
        for channel in list(cycle._channels):
            try:
                renewed += channel.renew_leases()
            except channel.connection_errors:
                log.debug("lease renewal failed; the next one tries again", exc_info=True)
        return renewed
