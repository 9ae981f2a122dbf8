"""The outbox relay on the in-memory unit of work with a fake publisher."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from domain import OutboxMessage
from persistence.memory import MemoryState, MemoryUnitOfWork
from workers.outbox import BackgroundDelivery, OutboxRelay, OutboxSweeper, SentMarks

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """Stands still until a test moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakePublisher:
    """Records what it sent; raises for the event ids it is told to fail on."""

    def __init__(self, fail_on: Iterable[str] = ()) -> None:
        self.fail_on = set(fail_on)
        self.attempted: list[str] = []
        self.sent: list[str] = []

    def publish(self, message: OutboxMessage) -> None:
        self.attempted.append(message.event_id)
        if message.event_id in self.fail_on:
            raise ConnectionError("broker unreachable")
        self.sent.append(message.event_id)


def _message(n: int, created_at: datetime) -> OutboxMessage:
    event_id = f"00000000-0000-4000-8000-{n:012d}"
    return OutboxMessage(
        event_id=event_id,
        task_name="pipeline.deploy",
        queue="pipeline.deploy",
        body={"event_id": event_id},
        image_group_id="group-1",
        created_at=created_at,
    )


@pytest.fixture
def state() -> MemoryState:
    return MemoryState()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


def _store(state: MemoryState, *messages: OutboxMessage) -> list[OutboxMessage]:
    with MemoryUnitOfWork(state) as uow:
        for message in messages:
            uow.outbox.add(message)
        uow.commit()
    return list(messages)


def _relay(state: MemoryState, publisher: FakePublisher, clock: FakeClock) -> OutboxRelay:
    return OutboxRelay(lambda: MemoryUnitOfWork(state), publisher, clock)


def _unsent(state: MemoryState) -> list[str]:
    return sorted(m.event_id for m in state.outbox.values() if m.sent_at is None)


def test_deliver_publishes_each_message_in_order_and_marks_it_sent(
    state: MemoryState, clock: FakeClock
) -> None:
    messages = _store(state, *(_message(n, NOW) for n in (1, 2, 3)))
    publisher = FakePublisher()
    clock.advance(5)

    delivered = _relay(state, publisher, clock).deliver(messages)

    assert delivered == 3
    assert publisher.sent == [m.event_id for m in messages]
    assert {m.event_id: m.sent_at for m in state.outbox.values()} == {
        m.event_id: NOW + timedelta(seconds=5) for m in messages
    }
    assert state.outbox[messages[0].event_id].body == messages[0].body


def test_deliver_of_nothing_publishes_nothing_and_writes_nothing(
    state: MemoryState, clock: FakeClock
) -> None:
    [message] = _store(state, _message(1, NOW))
    publisher = FakePublisher()

    assert _relay(state, publisher, clock).deliver([]) == 0

    assert publisher.attempted == []
    assert _unsent(state) == [message.event_id]


def test_a_publish_failure_stops_delivery_and_leaves_the_rest_unsent(
    state: MemoryState, clock: FakeClock
) -> None:
    first, second, third = _store(state, *(_message(n, NOW) for n in (1, 2, 3)))
    publisher = FakePublisher(fail_on=[second.event_id])

    delivered = _relay(state, publisher, clock).deliver([first, second, third])

    assert delivered == 1
    assert publisher.attempted == [first.event_id, second.event_id]
    assert state.outbox[first.event_id].sent_at == NOW
    assert _unsent(state) == [second.event_id, third.event_id]


def test_sweep_sends_only_rows_older_than_the_grace_period(
    state: MemoryState, clock: FakeClock
) -> None:
    old, young = _store(
        state, _message(1, NOW - timedelta(seconds=60)), _message(2, NOW - timedelta(seconds=10))
    )
    publisher = FakePublisher()

    swept = _relay(state, publisher, clock).sweep(grace=30)

    assert swept == 1
    assert publisher.sent == [old.event_id]
    assert state.outbox[old.event_id].sent_at == NOW
    assert _unsent(state) == [young.event_id]


def test_sweep_sends_the_oldest_rows_first_and_at_most_its_limit(
    state: MemoryState, clock: FakeClock
) -> None:
    rows = _store(state, *(_message(n, NOW - timedelta(seconds=100 - n)) for n in (3, 1, 2)))
    publisher = FakePublisher()

    swept = _relay(state, publisher, clock).sweep(grace=30, limit=2)

    assert swept == 2
    by_age = sorted(rows, key=lambda m: m.created_at)
    assert publisher.sent == [by_age[0].event_id, by_age[1].event_id]
    assert _unsent(state) == [by_age[2].event_id]


def test_a_swept_row_is_leased_so_a_second_sweep_right_after_leaves_it_alone(
    state: MemoryState, clock: FakeClock
) -> None:
    [row] = _store(state, _message(1, NOW - timedelta(seconds=60)))
    publisher = FakePublisher(fail_on=[row.event_id])
    relay = _relay(state, publisher, clock)
    assert relay.sweep(grace=30, lease=60) == 0
    assert publisher.attempted == [row.event_id]

    clock.advance(1)
    assert relay.sweep(grace=30, lease=60) == 0

    assert publisher.attempted == [row.event_id]
    assert _unsent(state) == [row.event_id]


def test_a_sweep_running_while_another_publishes_does_not_take_the_leased_rows(
    state: MemoryState, clock: FakeClock
) -> None:
    rows = _store(state, *(_message(n, NOW - timedelta(seconds=60)) for n in (1, 2)))
    rival_publisher = FakePublisher()
    rival = _relay(state, rival_publisher, clock)
    rival_swept: list[int] = []

    class SweepsMidway(FakePublisher):
        def publish(self, message: OutboxMessage) -> None:
            if not rival_swept:
                rival_swept.append(rival.sweep(grace=30))
            super().publish(message)

    publisher = SweepsMidway()

    swept = _relay(state, publisher, clock).sweep(grace=30)

    assert (swept, rival_swept) == (2, [0])
    assert rival_publisher.attempted == []
    assert publisher.sent == [m.event_id for m in rows]
    assert _unsent(state) == []


def test_a_row_whose_lease_ran_out_is_swept_again_and_sent(
    state: MemoryState, clock: FakeClock
) -> None:
    [row] = _store(state, _message(1, NOW - timedelta(seconds=60)))
    publisher = FakePublisher(fail_on=[row.event_id])
    relay = _relay(state, publisher, clock)
    relay.sweep(grace=30, lease=60)
    publisher.fail_on.clear()
    clock.advance(61)

    swept = relay.sweep(grace=30, lease=60)

    assert swept == 1
    assert publisher.sent == [row.event_id]
    assert state.outbox[row.event_id].sent_at == clock.now
    assert _unsent(state) == []


def test_a_sent_row_is_never_swept_again(state: MemoryState, clock: FakeClock) -> None:
    [row] = _store(state, _message(1, NOW - timedelta(seconds=60)))
    publisher = FakePublisher()
    relay = _relay(state, publisher, clock)
    assert relay.sweep(grace=30) == 1
    clock.advance(3600)

    assert relay.sweep(grace=30) == 0

    assert publisher.sent == [row.event_id]


def test_with_batched_marks_a_delivered_row_is_marked_sent_when_the_batch_is_flushed(
    state: MemoryState, clock: FakeClock
) -> None:
    [row] = _store(state, _message(1, NOW))
    publisher = FakePublisher()
    relay = OutboxRelay(lambda: MemoryUnitOfWork(state), publisher, clock, mark_every=3600)

    assert relay.deliver([row]) == 1
    assert publisher.sent == [row.event_id]
    assert _unsent(state) == [row.event_id]

    relay.flush()

    assert _unsent(state) == []
    assert state.outbox[row.event_id].sent_at == NOW


class Ticks:
    """A monotonic clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_batched_marks_wait_until_the_oldest_is_due_then_go_in_one_write() -> None:
    ticks, written = Ticks(), list[Sequence[str]]()
    marks = SentMarks(written.append, every=0.2, clock=ticks)

    assert marks.due_in() is None
    marks.add(["a"])
    ticks.now += 0.15
    marks.add(["b"])

    assert written == []
    assert marks.due_in() == pytest.approx(0.05)

    ticks.now += 0.05
    marks.add(["c"])

    assert written == [["a", "b", "c"]]
    assert marks.due_in() is None


def test_the_due_time_runs_from_the_oldest_mark_of_a_new_batch() -> None:
    ticks, written = Ticks(), list[Sequence[str]]()
    marks = SentMarks(written.append, every=0.2, clock=ticks)
    marks.add(["a"])
    marks.flush()
    ticks.now += 5

    marks.add(["b"])

    assert written == [["a"]]
    assert marks.due_in() == pytest.approx(0.2)


def test_the_delivery_thread_writes_waiting_marks_once_it_is_idle(state: MemoryState) -> None:
    [row] = _store(state, _message(1, NOW))
    relay = OutboxRelay(
        lambda: MemoryUnitOfWork(state), FakePublisher(), FakeClock(NOW), mark_every=0.05
    )
    delivery = BackgroundDelivery(relay)

    assert delivery.deliver([row]) == 1

    # Nothing else is published: the thread itself wakes when the mark is due.
    deadline = time.monotonic() + 10
    while _unsent(state) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _unsent(state) == []
    assert relay.marks_due_in() is None


def test_a_sweep_run_marks_what_it_sent_before_it_ends(
    state: MemoryState, clock: FakeClock
) -> None:
    [row] = _store(state, _message(1, NOW - timedelta(seconds=60)))
    publisher = FakePublisher()
    relay = OutboxRelay(lambda: MemoryUnitOfWork(state), publisher, clock, mark_every=3600)
    sweeper = OutboxSweeper(lambda: relay, interval=3600, grace=30)

    sweeper.sweep_all()

    assert publisher.sent == [row.event_id]
    assert _unsent(state) == []


class BatchingPublisher(FakePublisher):
    """Sends a batch at once, or fails it whole (as kombu's publish batch does)."""

    def __init__(self, fail_on: Iterable[str] = (), *, batch_fails: bool = False) -> None:
        super().__init__(fail_on)
        self.batch_fails = batch_fails
        self.batches: list[list[str]] = []

    def publish_batch(self, messages: Sequence[OutboxMessage]) -> None:
        self.batches.append([m.event_id for m in messages])
        if self.batch_fails:
            raise ConnectionError("broker unreachable mid-batch")
        self.sent.extend(m.event_id for m in messages)


def test_a_publisher_that_batches_gets_every_message_in_one_batch_and_all_are_marked(
    state: MemoryState, clock: FakeClock
) -> None:
    messages = _store(state, *(_message(n, NOW) for n in (1, 2, 3)))
    publisher = BatchingPublisher()

    assert _relay(state, publisher, clock).deliver(messages) == 3

    assert publisher.batches == [[m.event_id for m in messages]]
    assert publisher.attempted == []  # nothing went one by one
    assert _unsent(state) == []


def test_a_failed_batch_is_sent_again_one_by_one_and_what_fails_then_stays_unsent(
    state: MemoryState, clock: FakeClock
) -> None:
    first, second, third = _store(state, *(_message(n, NOW) for n in (1, 2, 3)))
    publisher = BatchingPublisher(fail_on=[second.event_id], batch_fails=True)

    assert _relay(state, publisher, clock).deliver([first, second, third]) == 1

    assert publisher.batches == [[first.event_id, second.event_id, third.event_id]]
    assert publisher.attempted == [first.event_id, second.event_id]
    assert _unsent(state) == [second.event_id, third.event_id]


def test_the_delivery_thread_publishes_what_waits_for_it_in_one_batch(
    state: MemoryState, clock: FakeClock
) -> None:
    rows = _store(state, *(_message(n, NOW) for n in (1, 2, 3, 4)))
    entered, release = threading.Event(), threading.Event()

    class Held(BatchingPublisher):
        def publish_batch(self, messages: Sequence[OutboxMessage]) -> None:
            entered.set()
            release.wait(10)  # the first batch holds the thread while the rest are handed over
            super().publish_batch(messages)

    publisher = Held()
    delivery = BackgroundDelivery(_relay(state, publisher, clock))
    delivery.deliver(rows[:1])
    assert entered.wait(10)
    for row in rows[1:]:
        delivery.deliver([row])
    release.set()
    delivery.flush()

    assert publisher.batches == [[rows[0].event_id], [r.event_id for r in rows[1:]]]
    assert _unsent(state) == []


def test_after_a_failed_batch_one_event_s_failure_holds_back_no_other_event_s_follow_ons(
    state: MemoryState, clock: FakeClock
) -> None:
    a1, a2, b1 = _store(state, *(_message(n, NOW) for n in (1, 2, 3)))
    publisher = BatchingPublisher(fail_on=[a1.event_id], batch_fails=True)

    assert _relay(state, publisher, clock).deliver_each([[a1, a2], [b1]]) == 1

    assert publisher.batches == [[a1.event_id, a2.event_id, b1.event_id]]
    assert publisher.attempted == [a1.event_id, b1.event_id]  # a2 waits behind a1, b1 does not
    assert _unsent(state) == [a1.event_id, a2.event_id]
