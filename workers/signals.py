"""Worker lifecycle: fresh connections after fork, and the outbox sweep in the main process."""

from __future__ import annotations

from typing import Any

from celery import signals

from workers import bootstrap
from workers.relay import OutboxRelay, OutboxSweeper

_sweeper: OutboxSweeper | None = None


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    bootstrap.reset(after_fork=True)


def _relay() -> OutboxRelay:
    return bootstrap.runtime().relay


@signals.worker_ready.connect
def _start_sweeper(**_: Any) -> None:
    global _sweeper
    settings = bootstrap.runtime().settings
    _sweeper = OutboxSweeper(
        _relay, interval=settings.outbox_sweep_interval, grace=settings.outbox_sweep_grace
    )
    _sweeper.start()


@signals.worker_shutdown.connect
def _stop_sweeper(**_: Any) -> None:
    global _sweeper
    if _sweeper is not None:
        _sweeper.stop()
        _sweeper = None
