"""Worker lifecycle signals act for the event worker only, never for the simulator's worker."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from celery import signals as celery_signals

from workers.celery import app
from workers.runtime import lifecycle, root
from workers.runtime.root import ProcessState
from workers.settings import Settings
from workers.standin import simulator


class FakeSweeper:
    """Stands in for the sweep thread; records what the signals asked of it."""

    made: ClassVar[list[FakeSweeper]] = []

    def __init__(self, relay: Any, **options: Any) -> None:
        self.options = options
        self.started = self.stopped = False
        FakeSweeper.made.append(self)

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True


@pytest.fixture(autouse=True)
def fake_sweeper(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeSweeper.made = []
    monkeypatch.setattr(lifecycle, "OutboxSweeper", FakeSweeper)
    fresh = ProcessState()  # no thread of an earlier test
    monkeypatch.setattr(root, "state", lambda: fresh)
    settings = Settings(IMAGEGROUPS_OUTBOX_SWEEP_INTERVAL=0.5, IMAGEGROUPS_RETENTION_INTERVAL=0)
    monkeypatch.setattr(root, "runtime", lambda: SimpleNamespace(settings=settings))
    monkeypatch.setattr(root, "reset", lambda **_: None)


class Worker:
    """What Celery sends as the signal's sender: a worker (or its consumer) with its app."""

    def __init__(self, celery_app: Any) -> None:
        self.app = celery_app
        self.hostname = "test@host"


def worker_of(celery_app: Any) -> Worker:
    return Worker(celery_app)


def test_the_simulator_worker_becoming_ready_starts_no_outbox_sweep() -> None:
    celery_signals.worker_ready.send(sender=worker_of(simulator.make_app()))

    assert FakeSweeper.made == []


def test_the_event_worker_becoming_ready_starts_one_sweep_and_its_shutdown_stops_it() -> None:
    event_worker, sim_worker = worker_of(app), worker_of(simulator.make_app())

    celery_signals.worker_ready.send(sender=event_worker)
    celery_signals.worker_ready.send(sender=event_worker)
    [sweeper] = FakeSweeper.made
    celery_signals.worker_shutdown.send(sender=sim_worker)
    stopped_by_simulator = sweeper.stopped
    celery_signals.worker_shutdown.send(sender=event_worker)

    assert sweeper.started
    assert sweeper.options["interval"] == 0.5
    assert not stopped_by_simulator
    assert sweeper.stopped


def test_only_the_event_worker_counts_as_one() -> None:
    wiring = lifecycle.Lifecycle(app)
    assert wiring.is_event_worker(worker_of(app))
    assert not wiring.is_event_worker(worker_of(simulator.make_app()))
    assert not wiring.is_event_worker(None)
