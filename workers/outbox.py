"""The way out: the contract's envelope, follow-on events written in the transition's
transaction, and the relay that publishes them after it.

- The envelope (docs/contract.md §2), for the follow-ons the worker writes and the incoming
  events a publisher sends: built and sent as one would (CLI, simulator, demo, tests).
- Follow-ons: the requests for the next stage, as outbox messages, built from the
  StageRequested a group recorded, by the unit of work at commit (it is handed a FollowOns
  by the composition root), never by a handler.
- The relay publishes committed follow-ons after the commit, outside every lock, and
  sweeps up any left unsent; CeleryPublisher sends each as a Celery task on its own queue.
  In a worker, a thread of each process publishes (BackgroundDelivery) and writes the
  "sent" marks in batches (SentMarks) when they are due or it goes idle.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from domain import ImageGroup, OutboxMessage, StageName, StageRequested
from persistence.uow import StoreUnitOfWork
from workers.messages import (
    CATALOG_PARSED,
    EVENTS_QUEUE,
    FOLLOW_ON,
    SCHEMA_VERSION,
    STAGE_FINISHED,
    TASK_FOR_TYPE,
)
from workers.runtime.periodic import Every, Health


def envelope(
    event_type: str,
    job_id: str,
    payload: dict[str, Any],
    *,
    event_id: str | None = None,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": event_id or str(uuid.uuid4()),
        "event_type": event_type,
        "schema_version": SCHEMA_VERSION,
        "occurred_at": (at or datetime.now(UTC)).isoformat(),
        "job_id": job_id,
        "payload": payload,
    }
    if correlation_id is not None:
        body["correlation_id"] = correlation_id
    if causation_id is not None:
        body["causation_id"] = causation_id
    return body


def catalog_parsed(
    job_id: str,
    image_group_id: str,
    roles: list[str],
    role_images: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    payload: dict[str, Any] = {"image_group_id": image_group_id, "roles": roles}
    if role_images:
        payload["role_images"] = role_images
    for key in ("catalog_name", "catalog_version"):
        value = extra.pop(key, None)
        if value is not None:
            payload[key] = value
    return envelope(CATALOG_PARSED.event_type, job_id, payload, **extra)


def stage_finished(
    job_id: str,
    stage: str,
    outcome: str,
    *,
    image_group_id: str | None = None,
    attempt: int | None = None,
    request_event_id: str | None = None,
    detail: dict[str, Any] | None = None,
    error_code: str | None = None,
    error_summary: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    payload: dict[str, Any] = {"stage": stage, "outcome": outcome}
    optional = {
        "image_group_id": image_group_id,
        "attempt": attempt,
        "request_event_id": request_event_id,
        "result_detail": detail,
        "error_code": error_code,
        "error_summary": error_summary,
    }
    payload.update({k: v for k, v in optional.items() if v is not None})
    return envelope(STAGE_FINISHED.event_type, job_id, payload, **extra)


def send(app: Any, event: dict[str, Any], **options: Any) -> str:
    """Send an incoming event as its Celery task on the events queue; returns the event_id."""
    app.send_task(
        TASK_FOR_TYPE[event["event_type"]],
        kwargs={"event": event},
        queue=EVENTS_QUEUE,
        **options,
    )
    return str(event["event_id"])


def _uuid4() -> str:
    return str(uuid.uuid4())


class FollowOns:
    """Turns a stage request into the follow-on that asks for it, with an id of its own."""

    def __init__(self, new_id: Callable[[], str] = _uuid4) -> None:
        self.new_id = new_id

    def __call__(self, group: ImageGroup, requested: StageRequested) -> OutboxMessage:
        return request_message(group, requested, event_id=self.new_id())


def request_message(
    group: ImageGroup, requested: StageRequested, *, event_id: str
) -> OutboxMessage:
    """`deploy.requested`, `pxe_boot.requested` or `validate.requested`; its causation is
    the transition's event, its time the transition's."""
    spec = FOLLOW_ON[requested.stage]
    payload: dict[str, Any] = {"image_group_id": group.id.value, "attempt": requested.attempt}
    if requested.stage is StageName.DEPLOY:
        payload["images"] = [
            {"role": image.role.value, "image_name": image.image_name} for image in group.images
        ]
    body = envelope(
        spec.event_type,
        group.job_id,
        payload,
        event_id=event_id,
        correlation_id=requested.correlation_id,
        causation_id=requested.event_id,
        at=requested.at,
    )
    return OutboxMessage(
        event_id=event_id,
        task_name=spec.task,
        queue=spec.queue,
        body=body,
        image_group_id=group.id.value,
        created_at=requested.at,
    )


log = logging.getLogger(__name__)


class Deliverer(Protocol):
    """Publishes committed follow-ons (now, or soon from a thread); flush waits for them."""

    def deliver(self, messages: Sequence[OutboxMessage]) -> int: ...

    def flush(self) -> None: ...


class Publisher(Protocol):
    def publish(self, message: OutboxMessage) -> None:
        """Send one follow-on event; its task id must equal its event_id."""


@runtime_checkable
class BatchPublisher(Publisher, Protocol):
    def publish_batch(self, messages: Sequence[OutboxMessage]) -> None:
        """Send them all at once; raises if any may not have been sent (none counts as sent)."""


class OutboxRelay:
    def __init__(
        self,
        new_uow: Callable[[], StoreUnitOfWork],
        publisher: Publisher,
        clock: Callable[[], datetime],
        *,
        mark_every: float | None = None,
    ) -> None:
        self.new_uow = new_uow
        self.publisher = publisher
        self.clock = clock
        # In the worker, "sent" marks are batched off the hot path: one short transaction per
        # `mark_every` seconds instead of one per event. A mark lost in a crash only means the
        # sweep sends that follow-on again, which consumers absorb by event_id.
        self._marks = None if mark_every is None else SentMarks(self._mark, mark_every)
        # Asked once: a runtime Protocol check is too slow to make per delivery.
        self._batches = publisher if isinstance(publisher, BatchPublisher) else None

    def deliver(self, messages: Sequence[OutboxMessage]) -> int:
        """Publish after commit; what fails stays unsent in the outbox for the sweep."""
        return self.deliver_each([messages])

    def deliver_each(self, events: Sequence[Sequence[OutboxMessage]]) -> int:
        """Several events' follow-ons, in one batch; if it fails, each event's one by one, so
        a follow-on that fails holds back only the rest of its own event's."""
        sent = self._in_one_batch([message for messages in events for message in messages])
        if sent is None:
            sent = [event_id for messages in events for event_id in self._one_by_one(messages)]
        if sent and self._marks is not None:
            self._marks.add(sent)
        elif sent:
            self._mark(sent)
        return len(sent)

    def _in_one_batch(self, messages: Sequence[OutboxMessage]) -> list[str] | None:
        """The event ids, all sent in one batch; None: no batch, or it failed."""
        if not messages or self._batches is None:
            return None
        try:
            self._batches.publish_batch(messages)
        except Exception:
            # Some may have gone: sending them again one by one (with retries) may repeat
            # them, which consumers absorb by event_id, as they do the sweep's.
            log.warning(
                "a batch of %d follow-ons failed; sending them one by one",
                len(messages),
                exc_info=True,
            )
            return None
        return [message.event_id for message in messages]

    def _one_by_one(self, messages: Sequence[OutboxMessage]) -> list[str]:
        sent: list[str] = []
        for message in messages:
            try:
                self.publisher.publish(message)
            except Exception:
                log.warning(
                    "publish of %s event_id=%s image_group_id=%s failed; the sweep retries it",
                    message.task_name,
                    message.event_id,
                    message.image_group_id,
                    exc_info=True,
                )
                break
            sent.append(message.event_id)
        return sent

    def flush(self) -> None:
        """Write the "sent" marks still waiting (batched marks only)."""
        if self._marks is not None:
            self._marks.flush()

    def marks_due_in(self) -> float | None:
        """Seconds until the waiting "sent" marks are due, or None: none wait."""
        return None if self._marks is None else self._marks.due_in()

    def _mark(self, event_ids: Sequence[str]) -> None:
        try:
            with self.new_uow() as uow:
                uow.outbox.mark_sent(event_ids, self.clock())
                uow.commit()
        except Exception:
            # Sent but not marked: the sweep sends them again; consumers dedupe by event_id.
            log.warning("could not mark %d outbox rows sent", len(event_ids), exc_info=True)

    def sweep(self, *, grace: float, lease: float = 60.0, limit: int = 200) -> int:
        """Lease rows older than `grace` seconds that nobody sent, and send them."""
        now = self.clock()
        with self.new_uow() as uow:
            claimed = uow.outbox.claim_unsent(
                created_before=now - timedelta(seconds=grace),
                lease_until=now + timedelta(seconds=lease),
                now=now,
                limit=limit,
            )
            uow.commit()
        if claimed:
            log.info("outbox sweep found %d unsent follow-on events", len(claimed))
        return self.deliver(claimed)


class OutboxSweeper(Every):
    """A daemon thread in the worker that runs the sweep every `interval` seconds."""

    def __init__(
        self,
        relay: Callable[[], OutboxRelay],
        *,
        interval: float,
        grace: float,
        health: Health | None = None,
    ) -> None:
        super().__init__(self.sweep_all, interval=interval, name="outbox-sweeper", health=health)
        self.relay = relay
        self.grace = grace

    def sweep_all(self) -> None:
        relay = self.relay()
        try:
            while relay.sweep(grace=self.grace) > 0:
                pass
        finally:
            relay.flush()  # what it sent is marked now, even if a later sweep failed

    def stop(self, timeout: float | None = None) -> None:
        super().stop(self.interval + 5 if timeout is None else timeout)


class BackgroundDelivery:
    """In a worker: a thread of the pool process publishes the follow-ons, so the task (and
    its acknowledgement) does not wait on Redis for them. The rows are committed before they
    are handed over; a process that dies before its thread sent them leaves them unsent, and
    the worker's sweep sends them (the outbox's promise does not depend on this thread)."""

    #: At most this many handed-over lists (one per event) are published together.
    GATHER = 50

    def __init__(self, relay: OutboxRelay) -> None:
        self.relay = relay
        self._queue: queue.Queue[list[OutboxMessage]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def deliver(self, messages: Sequence[OutboxMessage]) -> int:
        """Hand the messages to the thread; returns how many were handed over."""
        if messages:
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    # Started lazily: in a forked pool process, threads of the parent are gone.
                    self._thread = threading.Thread(
                        target=self._run, name="outbox-delivery", daemon=True
                    )
                    self._thread.start()
            self._queue.put(list(messages))
        return len(messages)

    def flush(self) -> None:
        """Wait until everything handed over was published (or given up to the sweep)."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.join()
        self.relay.flush()

    def _run(self) -> None:
        while True:
            try:
                # Idle with "sent" marks waiting: wake when they are due, and write them.
                batch = self._queue.get(timeout=self.relay.marks_due_in())
            except queue.Empty:
                self.relay.flush()
                continue
            events = [batch]
            while len(events) < self.GATHER:  # what waits meanwhile goes with it, in one publish
                try:
                    events.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self.relay.deliver_each(events)
            finally:
                for _ in events:
                    self._queue.task_done()


class SentMarks:
    """Event ids published but not yet marked sent, written in batches of up to `every`
    seconds: by whoever adds ids once the oldest waiting one is that old, and by `flush`
    (the delivery thread when it goes idle, the sweep after each run, a process's shutdown).
    No thread of its own: a process that publishes nothing has nothing to wake for."""

    def __init__(
        self,
        mark: Callable[[Sequence[str]], None],
        every: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mark = mark
        self.every = every
        self.clock = clock
        self._ids: list[str] = []
        self._since = 0.0  # when the oldest waiting id was added
        self._lock = threading.Lock()

    def add(self, event_ids: Sequence[str]) -> None:
        with self._lock:
            if not self._ids:
                self._since = self.clock()
            self._ids.extend(event_ids)
        if self.due_in() == 0.0:
            self.flush()

    def due_in(self) -> float | None:
        """Seconds until the waiting marks are due (0.0: now), or None: none wait."""
        with self._lock:
            if not self._ids:
                return None
            return max(0.0, self._since + self.every - self.clock())

    def flush(self) -> None:
        with self._lock:
            ids, self._ids = self._ids, []
        if ids:
            self.mark(ids)


__all__: list[str] = []


def shown(value: dict[str, Any], limit: int) -> str:
    """repr of a follow-on's kwargs cut to `limit` characters, as Celery cuts saferepr's."""
    text = repr(value)
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


#: How often and soon a follow-on's publish is tried again when the broker fails it.
RETRY_POLICY: dict[str, Any] = {"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2}


def _reprs_stay_headers(properties: dict[str, Any] | None = None, **_: Any) -> None:
    """Celery copies every send_task option it does not know into the message's properties,
    argsrepr and kwargsrepr too, which it has put in the headers already: a follow-on would
    carry its kwargs' repr twice. The copies go before the publish (before_task_publish)."""
    if properties is not None:
        properties.pop("argsrepr", None)
        properties.pop("kwargsrepr", None)


class CeleryPublisher:
    """Publishes a follow-on as a Celery task on its queue; the task id is its event_id.

    Given `load_app` instead of an app, it loads the app on its first publish: a process that
    never publishes (a read command) never pays for importing Celery.
    """

    def __init__(self, app: Any = None, *, load_app: Callable[[], Any] | None = None) -> None:
        self._app = app
        self._load_app = load_app
        self._hooked = False

    @property
    def app(self) -> Any:
        if self._app is None and self._load_app is not None:
            self._app = self._load_app()
        if not self._hooked and self._app is not None:
            from celery.signals import before_task_publish  # Celery is loaded by now

            before_task_publish.connect(_reprs_stay_headers, weak=False, dispatch_uid=__name__)
            self._hooked = True
        return self._app

    def publish(self, message: OutboxMessage) -> None:
        self._send(message, retry=True)

    def publish_batch(self, messages: Sequence[OutboxMessage]) -> None:
        """Every message and its sent event in one Redis round trip (kombu's publish batch,
        a pipeline; on a transport without batches, kombu sends each at once). Not retried:
        a failed batch raises (kombu cannot say which went), and the relay sends them again
        one by one."""
        with self.app.producer_or_acquire() as producer:
            # Connected first, with a publish's retries: a broker that is down fails the batch
            # as soon as it would fail one publish (kombu's own wait for a channel is longer).
            producer.connection.ensure_connection(**RETRY_POLICY)
            with producer.batch():
                for message in messages:
                    self._send(message, retry=False, producer=producer)

    def _send(self, message: OutboxMessage, *, retry: bool, producer: Any = None) -> None:
        kwargs = {"event": message.body}
        self.app.send_task(
            message.task_name,
            kwargs=kwargs,
            task_id=message.event_id,
            queue=message.queue,
            producer=producer,
            # What Flower shows of the task, cut to Celery's length; repr costs a fifteenth
            # of Celery's saferepr for a follow-on's body (plain JSON values, bounded by the
            # schema) and shows all of it (task_repr_maxlevels does not apply).
            argsrepr="()",
            kwargsrepr=shown(kwargs, self.app.amqp.kwargsrepr_maxsize),
            retry=retry,
            retry_policy=RETRY_POLICY,
        )
