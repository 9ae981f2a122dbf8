"""Worker lifecycle: fresh connections after fork, and the outbox sweep in the main process.

Celery's signals fire for every worker in the process, and importing `workers` connects these
handlers: the stand-in pipeline (`imagegroups simulate`) imports it too. So the lifecycle
handlers act only for a worker of the event app, never for the simulator's own app.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

from workers import root
from workers.errors import shortest_retry_span
from workers.housekeeping import Every, pruning
from workers.relay import OutboxRelay, OutboxSweeper
from workers.safe_text import escape_handlers
from workers.settings import Settings
from workers.worker_health import HEALTH

log = logging.getLogger(__name__)

_sweeper: OutboxSweeper | None = None
_housekeeping: Every | None = None


def is_event_worker(sender: Any) -> bool:
    """Whether the signal's sender (a worker or its consumer) belongs to the event app."""
    from workers.celery import app

    return getattr(sender, "app", None) is app


def _on_worker_init(sender: Any = None, **_: Any) -> None:
    if is_event_worker(sender):
        root.batch_sent_marks()
        warning = recovery_warning(root.runtime().settings, sender.app.conf.broker_url)
        if warning:
            log.warning(warning)


def recovery_warning(settings: Settings, broker_url: str | None = None) -> str | None:
    """Said at start when a dead worker's messages would come back after the retries of the
    events waiting for them (a build result for its catalog) have run out. Only Redis hands
    messages back after a visibility timeout; other brokers notice a dead consumer at once."""
    broker = broker_url or settings.celery_broker_url
    if broker.split("://", 1)[0] not in ("redis", "rediss"):
        return None
    span = shortest_retry_span(
        settings.max_attempts, base=settings.retry_backoff_base, cap=settings.retry_backoff_max
    )
    if span > settings.recovery_seconds:
        return None
    return (
        f"the {settings.max_attempts} deliveries of an event may all be spent in {span:.0f}s, "
        f"before a dead worker's messages come back ({settings.recovery_seconds:.0f}s): raise "
        "IMAGEGROUPS_RETRY_BACKOFF_BASE or IMAGEGROUPS_MAX_ATTEMPTS, or lower "
        "IMAGEGROUPS_VISIBILITY_TIMEOUT, or an event whose predecessor was on a crashed host "
        "is dead-lettered instead of applied"
    )


def _after_fork(**_: Any) -> None:
    root.reset(after_fork=True)


def _before_exit(**_: Any) -> None:
    root.reset()  # flushes the batched "sent" marks of this process


def _relay() -> OutboxRelay:
    return root.runtime().relay


def _start_sweeper(sender: Any = None, **_: Any) -> None:
    global _sweeper
    if not is_event_worker(sender):
        return  # the simulator consumes the pipeline's queues; it must not send our outbox
    if _sweeper is not None:
        return  # one sweeper per process, however many embedded workers start
    settings = root.runtime().settings
    _sweeper = OutboxSweeper(
        _relay,
        interval=settings.outbox_sweep_interval,
        grace=settings.outbox_sweep_grace,
        health=HEALTH.database,
    )
    _sweeper.start()
    _start_housekeeping()


def _start_housekeeping() -> None:
    global _housekeeping
    if _housekeeping is None:
        _housekeeping = pruning(root.runtime)
        if _housekeeping is not None:
            _housekeeping.start()


def _stop_sweeper(sender: Any = None, **_: Any) -> None:
    global _sweeper, _housekeeping
    if not is_event_worker(sender):
        return
    if _sweeper is not None:
        _sweeper.stop()
        _sweeper = None
    if _housekeeping is not None:
        _housekeeping.stop()
        _housekeeping = None
    root.reset()  # flushes the main process's batched "sent" marks


def _escape_log_lines(logger: logging.Logger | None = None, **_: Any) -> None:
    """Event text in a log line (error summaries, bodies) cannot send terminal sequences or
    forge lines: Celery's handlers escape control characters (workers/safe_text.py)."""
    if logger is not None:
        escape_handlers(logger)


def connect() -> None:
    """Wire the handlers to Celery's signals (the Celery app does, when it is built)."""
    signals.after_setup_logger.connect(_escape_log_lines, weak=False)
    signals.after_setup_task_logger.connect(_escape_log_lines, weak=False)
    signals.worker_init.connect(_on_worker_init, weak=False)
    signals.worker_process_init.connect(_after_fork, weak=False)
    signals.worker_ready.connect(_start_sweeper, weak=False)
    signals.worker_shutdown.connect(_stop_sweeper, weak=False)
    signals.worker_process_shutdown.connect(_before_exit, weak=False)
