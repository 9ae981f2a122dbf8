"""What a process keeps lives in its runtime or in the store it belongs to, not in a class or
module of its own: the composition root is handed its publisher, and the in-memory store's
lock is the store's."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from domain import OutboxMessage
from persistence import MemoryState, MemoryUnitOfWork
from workers.runtime import root
from workers.runtime.root import Stranded
from workers.settings import Settings


class Recording:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def publish(self, message: OutboxMessage) -> None:
        self.sent.append(message.event_id)


@pytest.fixture
def sqlite_runtime() -> Iterator[None]:
    root.configure(Settings(DATABASE_URL="sqlite://"))
    yield
    root.install(root.Unwired())
    root.configure(None)


def test_units_of_work_on_different_stores_do_not_wait_for_each_other() -> None:
    holding, entered = threading.Event(), threading.Event()
    release = threading.Event()

    def hold(state: MemoryState) -> None:
        with MemoryUnitOfWork(state):
            holding.set()
            release.wait(5)

    def enter(state: MemoryState) -> None:
        with MemoryUnitOfWork(state):
            entered.set()

    holder = threading.Thread(target=hold, args=(MemoryState(),))
    holder.start()
    try:
        assert holding.wait(5)
        other = threading.Thread(target=enter, args=(MemoryState(),))
        other.start()
        assert entered.wait(2), "a unit of work on another store waited for this one's lock"
    finally:
        release.set()
        holder.join(5)


def test_units_of_work_on_one_store_take_turns() -> None:
    state, holding, release = MemoryState(), threading.Event(), threading.Event()
    entered = threading.Event()

    def hold() -> None:
        with MemoryUnitOfWork(state):
            holding.set()
            release.wait(5)

    def enter() -> None:
        with MemoryUnitOfWork(state):
            entered.set()

    holder, other = threading.Thread(target=hold), threading.Thread(target=enter)
    holder.start()
    assert holding.wait(5)
    other.start()
    waited = not entered.wait(0.2)
    release.set()
    holder.join(5)
    other.join(5)
    assert waited and entered.is_set()


def test_the_root_publishes_with_the_publisher_its_entry_point_handed_it(
    sqlite_runtime: None,
) -> None:
    publisher = Recording()
    root.install(publisher)

    assert root.runtime().relay.publisher is publisher


def test_a_root_handed_no_publisher_refuses_to_publish_and_says_why(
    sqlite_runtime: None,
) -> None:
    root.install(root.Unwired())
    message = OutboxMessage("e-1", "t", "q", {}, "g", datetime.now(UTC))

    with pytest.raises(RuntimeError, match="no publisher was handed"):
        root.runtime().relay.publisher.publish(message)


def test_the_process_state_outlives_a_rebuilt_runtime(sqlite_runtime: None) -> None:
    before = root.runtime()
    root.reset()
    after = root.runtime()

    assert after is not before
    assert after.state is before.state is root.state()
    assert after.metrics is root.state().counting.recorder


def test_stranded_tags_are_taken_once() -> None:
    stranded: Stranded[tuple[str, list[str] | None]] = Stranded()
    stranded.keep([("a", None), ("b", ["payload", "", "q"])])
    stranded.keep([("c", None)])

    assert stranded.take() == [("a", None), ("b", ["payload", "", "q"]), ("c", None)]
    assert stranded.take() == []
