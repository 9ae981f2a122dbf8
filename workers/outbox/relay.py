"""The outbox relay: publish committed follow-on events, and sweep up any left unsent."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from domain import OutboxMessage
from persistence.ports import StoreUnitOfWork
from workers.runtime.periodic import Every, Health

log = logging.getLogger(__name__)


class Deliverer(Protocol):
    """Publishes committed follow-ons (now, or soon from a thread); flush waits for them."""

    def deliver(self, messages: Sequence[OutboxMessage]) -> int: ...

    def flush(self) -> None: ...


class Publisher(Protocol):
    def publish(self, message: OutboxMessage) -> None:
        """Send one follow-on event; its task id must equal its event_id."""


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

    def deliver(self, messages: Sequence[OutboxMessage]) -> int:
        """Publish after commit; what fails stays unsent in the outbox for the sweep."""
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
        if sent and self._marks is not None:
            self._marks.add(sent)
        elif sent:
            self._mark(sent)
        return len(sent)

    def flush(self) -> None:
        if self._marks is not None:
            self._marks.flush()

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
        while self.relay().sweep(grace=self.grace) > 0:
            pass

    def stop(self, timeout: float | None = None) -> None:
        super().stop(self.interval + 5 if timeout is None else timeout)


class BackgroundDelivery:
    """In a worker: a thread of the pool process publishes the follow-ons, so the task (and
    its acknowledgement) does not wait on Redis for them. The rows are committed before they
    are handed over; a process that dies before its thread sent them leaves them unsent, and
    the worker's sweep sends them (the outbox's promise does not depend on this thread)."""

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
            batch = self._queue.get()
            try:
                self.relay.deliver(batch)
            finally:
                self._queue.task_done()


class SentMarks:
    """Event ids published but not yet marked sent, flushed by a timer thread in batches."""

    def __init__(self, mark: Callable[[Sequence[str]], None], every: float) -> None:
        self.mark = mark
        self.every = every
        self._ids: list[str] = []
        self._lock = threading.Lock()
        self._thread: Every | None = None

    def add(self, event_ids: Sequence[str]) -> None:
        with self._lock:
            self._ids.extend(event_ids)
            if self._thread is None or not self._thread.is_alive():
                # Started lazily: in a forked pool process, threads of the parent are gone.
                self._thread = Every(self.flush, interval=self.every, name="outbox-marks")
                self._thread.start()

    def flush(self) -> None:
        with self._lock:
            ids, self._ids = self._ids, []
        if ids:
            self.mark(ids)
