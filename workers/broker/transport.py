"""kombu's Redis transport, hardened, with leases on the messages a worker holds.

Leases: Redis gives an unacknowledged message to another worker once it is older than the
visibility timeout, whether or not its worker is alive. Every worker here renews the messages
it holds (prefetched, waiting for a retry countdown, or running) every quarter of the timeout,
so only a dead worker's messages expire: the timeout can be short (fast recovery after a host
crash) without long countdowns or slow handlers being delivered twice.

Fetching: one round trip pops messages and stores them as unacknowledged, atomically.

kombu pops a message with BRPOP and only then, in a second round trip, stores it in its
unacknowledged hash: a worker killed between the two (or Redis, restarted from an AOF that
kept the pop only) loses the message. Here a Lua script pops up to the prefetch credit left
and stores each message in the hash and its index in the same step, so a message is always in
a queue or in the hash; an idle channel waits with BLMOVE from a queue to itself, which
blocks like BRPOP and takes nothing. Each fetched message is stored under a delivery tag of
the fetch's own (a publisher's tag could repeat another message's and share its hash entry),
as `NUL queue NUL entry`: the entry as it came, given back from there (give_back). A
no_ack consumer's entries (Celery's events for Flower, gossip) are popped only, as kombu pops
them: nobody would acknowledge them. A fetch whose reply waits unread (kombu pauses reading
it when the prefetch credit falls meanwhile) is leased like the messages the worker holds.

Screening: a malformed queue entry becomes a message we dead-letter.

An entry that is not a kombu envelope (not JSON, headers that are not an object, no delivery
tag...) would raise in kombu as it builds its message, which stops the whole worker. Every
fetched entry is parsed once and screened: a malformed one is replaced by a well-formed
stand-in carrying the raw entry as its body and the reason in a header, so the consumer
dead-letters it (workers/edge/accept.py) like any other bad message.

Acks that leave for Redis together: one round trip for every message acknowledged within
ACK_BATCH_SECONDS, instead of one per message (the QoS below).

Copies: a held message is kept with a copy, given back from the copy when the hash has none
(Redis lost it, or was down when the channel closed).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from queue import Empty
from typing import Any

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
        # Being delivered by a fetch, which stored them in the hash already.
        self.fetched: set[str] = set()

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
        if delivery_tag in self.fetched:  # stored by the fetch already
            virtual.QoS.append(self, message, delivery_tag)  # type: ignore[no-untyped-call]
            return
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
    priority = props.get("priority")
    if isinstance(priority, float) and not math.isfinite(priority):
        # kombu's restore raises on it and drops the message.
        return "the envelope's priority is not a finite number"
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


def _route_here(payload: dict[str, Any], queue: str) -> dict[str, Any]:
    """The entry, addressed to the queue it came from. Its delivery_info is where a retry is
    published and where kombu gives it back after a crash: a publisher must not pick that
    (a queue nobody consumes would take the event without an outcome)."""
    info = payload["properties"]["delivery_info"]
    payload["properties"]["delivery_info"] = {**info, "exchange": "", "routing_key": queue}
    return payload


def read_entry(raw: bytes) -> tuple[Any, str | None]:
    """A queue entry as kombu reads it (kombu's own JSON), and what keeps kombu from building
    a message out of it (None when nothing does)."""
    try:
        payload = loads(raw)  # type: ignore[no-untyped-call]
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, f"the queue entry is not JSON: {exc}"
    except Exception as exc:  # kombu's decoder of tagged values ({"__type__": ...})
        return None, f"kombu cannot decode the queue entry: {type(exc).__name__}: {exc}"
    return payload, envelope_problem(payload)


def screen(raw: bytes, queue: str) -> dict[str, Any]:
    """The entry as kombu reads it (parsed once) when it can be, else a stand-in that says
    why it cannot."""
    payload, problem = read_entry(raw)
    if problem is None:
        return payload if _routed_here(payload, queue) else _route_here(payload, queue)
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
    return stand_in


#: Pops up to ARGV[1] entries off the lists KEYS[1..n-2], in order, and stores each in the
#: unacknowledged hash KEYS[n-1] (as NUL queue NUL entry, under the tag ARGV[3] .. count)
#: and its index KEYS[n] (scored ARGV[2]), in one step. ARGV[2 + 2i] is list i's queue and
#: ARGV[3 + 2i] "1" when its consumer acknowledges (a no_ack consumer's entries, such as
#: Celery's events for Flower and gossip, are only popped, as kombu pops them).
#: Returns tag, queue, entry for each.
FETCH_SCRIPT = """
local lists = #KEYS - 2
local hash, index = KEYS[lists + 1], KEYS[lists + 2]
local want, now, prefix = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local out, n = {}, 0
for i = 1, lists do
  if n >= want then break end
  local entries = redis.call('RPOP', KEYS[i], want - n)
  if entries then
    local queue, acks = ARGV[2 + 2 * i], ARGV[3 + 2 * i] == '1'
    for _, entry in ipairs(entries) do
      n = n + 1
      local tag = prefix .. n
      if acks then
        redis.call('HSET', hash, tag, '\0' .. queue .. '\0' .. entry)
        redis.call('ZADD', index, now, tag)
      end
      out[#out + 1] = tag
      out[#out + 1] = queue
      out[#out + 1] = entry
    end
  end
end
return out
"""

#: What one fetch takes at most when the channel has no prefetch limit.
FETCH_MOST = 64

#: How a fetched message's entry starts in the unacknowledged hash (kombu's own start "[").
FETCHED = b"\0"


class Channel(kombu_redis.Channel):
    _in_poll: Any
    _brpop_sent_at: Any
    QoS = QoS
    #: The next command on the consuming connection: a fetch (True) or a wait.
    _fetch_next = True
    #: The fetch in flight (None when none is, or a wait is): its tags' prefix and how many
    #: it may take. Leased like held messages while its reply waits (kombu pauses reading it
    #: when the prefetch credit falls meanwhile).
    _in_flight: tuple[str, int] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # kombu's __init__ already reaches Redis (a PING), through _connparams.
        self._last_params: dict[bool, dict[str, Any]] = {}
        # Whether each consumed queue's consumer acknowledges nothing (basic_consume).
        self._no_ack: dict[str, bool] = {}
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]

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
        if self.connection.client is None and asynchronous in self._last_params:
            return dict(self._last_params[asynchronous])
        params: dict[str, Any] = super()._connparams(asynchronous)  # type: ignore[no-untyped-call]
        self._last_params[asynchronous] = dict(params)
        return params

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

    def _brpop_start(self, timeout: Any = None) -> None:
        # kombu's poller sends this whenever the channel may take messages and has no command
        # in flight (MultiChannelPoller._register_BRPOP), and reads its reply with
        # _brpop_read below: a fetch while the last one found messages, else a wait.
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        prefix = self.global_keyprefix or ""
        if self._fetch_next:
            pri_of: Any = self._q_for_pri
            lists = [(pri_of(q, pri), q) for pri in self.priority_steps for q in queues]
            keys = [key for key, _ in lists] + [self.unacked_key, self.unacked_index_key]
            want = self.qos.can_consume_max_estimate() or FETCH_MOST
            prefix_tag = f"{uuid.uuid4().hex}."
            command = [
                "EVAL",
                FETCH_SCRIPT,
                len(keys),
                *(prefix + key for key in keys),
                want,
                time.time(),
                prefix_tag,
                *(part for _, q in lists for part in (q, "0" if self._no_ack.get(q) else "1")),
            ]
            self._in_flight = (prefix_tag, want)
        else:
            self._in_flight = None
            # Waits on the first queue's own list; a fetch looks at every list (priorities,
            # other queues) when the wait ends, at the latest after brpop_timeout.
            key = prefix + self._q_for_pri(queues[0], 0)  # type: ignore[no-untyped-call]
            wait = self.brpop_timeout if timeout is None else timeout
            command = ["BLMOVE", key, key, "LEFT", "LEFT", wait or 0]
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()
        self.client.connection.send_command(*command)

    def _brpop_read(self, **options: Any) -> bool:
        fetching = self._in_flight is not None
        try:
            try:
                reply = self.client.parse_response(
                    self.client.connection, "EVAL" if fetching else "BLMOVE", **options
                )
            except self.connection_errors:
                # Reconnect on the next start. A fetch's messages are in the hash already,
                # not held: they come back after the visibility timeout.
                self.client.connection.disconnect()
                raise
        finally:
            self._in_poll = None
            self._in_flight = None
            self._flush_brpop_reauth()  # type: ignore[no-untyped-call]
        self._fetch_next = bool(reply) or not fetching
        if not fetching or not reply:
            raise Empty()
        self._deliver_fetched(reply)
        return True

    def _poll_error(self, type: Any, **options: Any) -> None:
        if type == "BRPOP":  # a reply in flight is read as one
            with contextlib.suppress(Empty):
                self._brpop_read(**options)
        else:
            super()._poll_error(type, **options)  # type: ignore[no-untyped-call]

    def _deliver_fetched(self, reply: list[Any]) -> None:
        entries = [
            (bytes_to_str(reply[i]), bytes_to_str(reply[i + 1]), reply[i + 2])  # type: ignore[no-untyped-call]
            for i in range(0, len(reply), 3)
        ]
        fetched = self.qos.fetched
        for position, (tag, queue, raw) in enumerate(entries):
            try:
                payload = screen(raw, queue)
                payload["properties"]["delivery_tag"] = tag
                fetched.add(tag)
                try:  # kombu's QoS takes it here, unless its consumer acknowledges nothing
                    self.connection._deliver(payload, queue)
                finally:
                    fetched.discard(tag)
            except BaseException:
                self._give_back_undelivered([later for later, _, _ in entries[position + 1 :]])
                raise
        self._queue_cycle.rotate(entries[-1][1])

    def _give_back_undelivered(self, tags: list[str]) -> None:
        """Fetched messages a failed delivery left behind, back to their queues now (else
        after the visibility timeout: they are in the hash, held by nobody)."""
        try:
            for tag in tags:
                self.give_back(tag, _kept(None))
        except self.connection_errors:
            log.debug("giving back a failed fetch's rest failed", exc_info=True)

    def renew_leases(self) -> int:
        qos = self._qos
        held = [] if qos is None else list(qos._delivered)
        if self._in_flight is not None and self._in_poll:  # its reply still to come
            prefix, want = self._in_flight
            held += [f"{prefix}{n}" for n in range(1, want + 1)]
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
            if stored and stored.startswith(FETCHED):
                queue, raw = stored[len(FETCHED) :].split(FETCHED, 1)
                self._restore_entry(bytes_to_str(queue), raw, pipe, leftmost)  # type: ignore[no-untyped-call]
                return
            found = loads(bytes_to_str(stored)) if stored else copy()  # type: ignore[no-untyped-call]
            if found:
                payload, exchange, routing_key = found
                self._do_restore_message(payload, exchange, routing_key, pipe, leftmost)  # type: ignore[no-untyped-call]

        with self.conn_or_acquire(client) as conn:
            conn.transaction(transaction, self.unacked_key)

    def _restore_entry(self, queue: str, raw: bytes, pipe: Any, leftmost: bool) -> None:
        """A fetched entry back in its queue: marked redelivered, as kombu gives back its own,
        when it is an envelope; as it came when not (screened again, dead-lettered)."""
        payload, problem = read_entry(raw)
        if problem is None:
            self._do_restore_message(payload, "", queue, pipe, leftmost)  # type: ignore[no-untyped-call]
        else:
            (pipe.lpush if leftmost else pipe.rpush)(queue, raw)

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        self._no_ack[queue] = bool(no_ack)
        consumer = super().basic_consume(queue, no_ack, *args, **kwargs)  # type: ignore[no-untyped-call]
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
