"""The worker watching over its groups and itself: the deadline sweep and the metrics endpoint.

Both live in the worker's main process. The deadline sweep is a thread of its own beside the
outbox sweep (workers/relay.py) rather than a step of it: it has its own interval, a slow or
failing expiry never holds up follow-ons, and the outbox sweep's health report stays about
the outbox. Several workers may sweep at once: each group is claimed under its row lock with
SKIP LOCKED and re-checked by the aggregate (workers/handlers/deadlines.py), so a stage is
expired exactly once, and everything it needs is in the database, so restarts lose nothing.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import signals

from workers import metrics, root
from workers.handlers import Expired, expire_overdue
from workers.housekeeping import Every
from workers.metrics_http import MetricsServer
from workers.root import Runtime
from workers.signals import is_event_worker

log = logging.getLogger(__name__)


def sweep_deadlines(rt: Runtime, *, batch: int = 100) -> list[Expired]:
    """FAIL every group whose deadline has passed, `batch` groups per transaction."""
    expired: list[Expired] = []
    while True:
        done = expire_overdue(deps=rt.deps, limit=batch)
        for stage in done:
            end = stage.ended
            log.warning(
                "image_group_id=%s %s attempt %d got no result by its deadline %s: FAILED "
                "(STAGE_TIMEOUT, event_id=%s)",
                stage.image_group_id,
                end.stage,
                end.attempt,
                stage.deadline_at.isoformat(),
                stage.event_id,
            )
            metrics.recorder().expired(end)
        expired += done
        if len(done) < batch:
            return expired


def metrics_directory(port: int) -> Path:
    """One directory per port: two workers on one host cannot share a port, so they never
    share (or empty) each other's files, and a restarted worker reuses and empties its own."""
    return Path(tempfile.gettempdir()) / f"imagegroups-metrics-{port}"


@dataclass
class _Watch:
    server: MetricsServer | None = None
    serving: bool = False
    sweep: Every | None = None


_watch = _Watch()


def _on_worker_init(sender: Any = None, **_: Any) -> None:
    """Before the pool forks: bind the port, then switch counting on for every process."""
    if not is_event_worker(sender) or _watch.server is not None:
        return
    settings = root.runtime().settings
    if settings.metrics_port is None:
        return
    try:
        # Bound first: a port another worker holds must not cost that worker its files.
        server = MetricsServer(settings.metrics_address, settings.metrics_port, root.runtime)
    except OSError as exc:
        log.error("metrics are off: cannot listen on port %d (%s)", settings.metrics_port, exc)
        return
    metrics.enable(metrics_directory(settings.metrics_port))
    _watch.server = server


def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    if not is_event_worker(sender):
        return
    directory = metrics.directory()
    if _watch.server is not None and not _watch.serving and directory is not None:
        _watch.server.start(directory)
        _watch.serving = True
        log.info("metrics at http://%s:%d/metrics", *_watch.server.address)
    if _watch.sweep is None:
        interval = root.runtime().settings.deadline_sweep_interval
        _watch.sweep = Every(
            lambda: sweep_deadlines(root.runtime()), interval=interval, name="deadline-sweep"
        )
        _watch.sweep.start()


def _on_worker_shutdown(sender: Any = None, **_: Any) -> None:
    if not is_event_worker(sender):
        return
    if _watch.sweep is not None:
        _watch.sweep.stop()
        _watch.sweep = None
    if _watch.server is not None and _watch.serving:
        _watch.server.stop()
    _watch.server, _watch.serving = None, False


def _on_process_shutdown(**_: Any) -> None:
    metrics.process_exited(os.getpid())  # a pool process ending: its live gauges go


def connect() -> None:
    """Wire the handlers to Celery's signals (the Celery app does, when it is built)."""
    signals.worker_init.connect(_on_worker_init, weak=False)
    signals.worker_ready.connect(_on_worker_ready, weak=False)
    signals.worker_shutdown.connect(_on_worker_shutdown, weak=False)
    signals.worker_process_shutdown.connect(_on_process_shutdown, weak=False)
