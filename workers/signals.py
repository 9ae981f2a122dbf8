"""Worker lifecycle: fresh connections after fork, and the outbox sweep in the main process."""

from __future__ import annotations

from typing import Any

from celery import signals

from workers import bootstrap
from workers.relay import OutboxRelay, OutboxSweeper
from workers.worker_health import HEALTH

_sweeper: OutboxSweeper | None = None


def _on_worker_init(**_: Any) -> None:
    bootstrap.batch_sent_marks()


def _after_fork(**_: Any) -> None:
    bootstrap.reset(after_fork=True)


def _before_exit(**_: Any) -> None:
    bootstrap.reset()  # flushes the batched "sent" marks of this process


def _relay() -> OutboxRelay:
    return bootstrap.runtime().relay


def _start_sweeper(**_: Any) -> None:
    global _sweeper
    if _sweeper is not None:
        return  # one sweeper per process, however many embedded workers start
    settings = bootstrap.runtime().settings
    _sweeper = OutboxSweeper(
        _relay,
        interval=settings.outbox_sweep_interval,
        grace=settings.outbox_sweep_grace,
        health=HEALTH.database,
    )
    _sweeper.start()


def _stop_sweeper(**_: Any) -> None:
    global _sweeper
    if _sweeper is not None:
        _sweeper.stop()
        _sweeper = None
    bootstrap.reset()  # flushes the main process's batched "sent" marks


signals.worker_init.connect(_on_worker_init, weak=False)
signals.worker_process_init.connect(_after_fork, weak=False)
signals.worker_ready.connect(_start_sweeper, weak=False)
signals.worker_shutdown.connect(_stop_sweeper, weak=False)
signals.worker_process_shutdown.connect(_before_exit, weak=False)
