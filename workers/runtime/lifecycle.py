"""The worker's lifecycle: every Celery signal it needs, connected once, here.

- logging set up: Celery's handlers escape control characters (workers/safe_text.py);
- worker_init (the main process, before the pool forks): the composition root is handed the
  event app's publisher (sent marks batched), the recovery warning is said, and the metrics
  port is bound with counting switched on for every process;
- worker_process_init (a pool process): fresh connections, never the parent's;
- worker_ready: the outbox sweep, retention, the deadline sweep and the metrics endpoint;
- worker_shutdown: all of those stopped, the main process's batched "sent" marks flushed;
- worker_process_shutdown: a pool process's marks flushed and its live gauges dropped.

Celery's signals fire for every worker in the process, and the stand-in pipeline (`imagegroups
simulate`) runs a worker of its own app: the handlers act only for a worker of the app
handed to `connect`. What they start is kept in the runtime's `state().threads`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import signals
from celery.worker.control import inspect_command

from workers.edge.decide import shortest_retry_span
from workers.outbox import CeleryPublisher, OutboxRelay, OutboxSweeper
from workers.runtime import root
from workers.runtime.housekeeping import deadline_sweeping, pruning
from workers.runtime.metrics_http import MetricsServer
from workers.runtime.root import COMMAND, MainThreads, metrics_directory
from workers.safe_text import escape_handlers
from workers.settings import Settings

log = logging.getLogger(__name__)


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


@inspect_command(name=COMMAND)  # type: ignore[untyped-decorator]
def imagegroups_health(_state: Any, **_: Any) -> dict[str, Any]:
    """Whether this worker can store dead letters and reach its database."""
    return root.state().health.report()


def _relay() -> OutboxRelay:
    return root.runtime().relay


class Lifecycle:
    """The handlers of the event app's worker."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def is_event_worker(self, sender: Any) -> bool:
        """Whether the signal's sender (a worker or its consumer) belongs to the event app."""
        return getattr(sender, "app", None) is self.app

    def worker_init(self, sender: Any = None, **_: Any) -> None:
        if not self.is_event_worker(sender):
            return
        root.install(CeleryPublisher(sender.app), batch_marks=True)
        settings = root.runtime().settings
        warning = recovery_warning(settings, sender.app.conf.broker_url)
        if warning:
            log.warning(warning)
        _bind_metrics(settings, root.state().threads)

    def worker_ready(self, sender: Any = None, **_: Any) -> None:
        if not self.is_event_worker(sender):
            return
        _serve_metrics(root.state().threads)
        _start_sweeps()

    def worker_shutdown(self, sender: Any = None, **_: Any) -> None:
        if not self.is_event_worker(sender):
            return
        threads = root.state().threads
        for thread in (threads.outbox_sweep, threads.retention, threads.deadline_sweep):
            if thread is not None:
                thread.stop()
        threads.outbox_sweep = threads.retention = threads.deadline_sweep = None
        if threads.metrics_server is not None and threads.serving_metrics:
            threads.metrics_server.stop()
        threads.metrics_server, threads.serving_metrics = None, False
        root.reset()  # flushes the main process's batched "sent" marks


def _bind_metrics(settings: Settings, threads: MainThreads) -> None:
    """Before the pool forks: bind the port, then switch counting on for every process."""
    if settings.metrics_port is None or threads.metrics_server is not None:
        return
    try:
        # Bound first: a port another worker holds must not cost that worker its files.
        server = MetricsServer(settings.metrics_address, settings.metrics_port, root.runtime)
    except OSError as exc:
        log.error("metrics are off: cannot listen on port %d (%s)", settings.metrics_port, exc)
        return
    root.state().counting.enable(metrics_directory(settings.metrics_port))
    threads.metrics_server = server


def _serve_metrics(threads: MainThreads) -> None:
    server = threads.metrics_server
    if server is not None and not threads.serving_metrics:
        server.start(root.state().counting)
        threads.serving_metrics = True
        log.info("metrics at http://%s:%d/metrics", *server.address)


def _start_sweeps() -> None:
    """One of each per process, however many embedded workers start."""
    state = root.state()
    threads = state.threads
    if threads.outbox_sweep is None:
        settings = root.runtime().settings
        threads.outbox_sweep = OutboxSweeper(
            _relay,
            interval=settings.outbox_sweep_interval,
            grace=settings.outbox_sweep_grace,
            health=state.health.database,
        )
        threads.outbox_sweep.start()
        threads.retention = pruning(root.runtime)
        if threads.retention is not None:
            threads.retention.start()
    if threads.deadline_sweep is None:
        threads.deadline_sweep = deadline_sweeping(root.runtime)
        threads.deadline_sweep.start()


def _after_fork(**_: Any) -> None:
    root.reset(after_fork=True)


def _process_exits(**_: Any) -> None:
    root.reset()  # flushes the batched "sent" marks of this pool process
    root.state().counting.process_exited(os.getpid())  # its live gauges go


def _escape_log_lines(logger: logging.Logger | None = None, **_: Any) -> None:
    """Event text in a log line (error summaries, bodies) cannot send terminal sequences or
    forge lines: Celery's handlers escape control characters (workers/safe_text.py)."""
    if logger is not None:
        escape_handlers(logger)


def connect(app: Any) -> Lifecycle:
    """Wire the handlers for `app`'s worker to Celery's signals, each once (the Celery app
    does, when it is built; a second call adds nothing: the first receivers stay)."""
    wiring = Lifecycle(app)
    receivers: list[tuple[Any, Any]] = [
        (signals.after_setup_logger, _escape_log_lines),
        (signals.after_setup_task_logger, _escape_log_lines),
        (signals.worker_init, wiring.worker_init),
        (signals.worker_process_init, _after_fork),
        (signals.worker_ready, wiring.worker_ready),
        (signals.worker_shutdown, wiring.worker_shutdown),
        (signals.worker_process_shutdown, _process_exits),
    ]
    for signal, receiver in receivers:
        signal.connect(receiver, weak=False, dispatch_uid=f"imagegroups.{signal.name}")
    return wiring
