"""Housekeeping in the worker's main process: retention, run every few minutes."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from persistence.retention import Cutoffs, prune
from workers.root import Runtime

log = logging.getLogger(__name__)


def prune_now(rt: Runtime, *, batch: int = 5000) -> dict[str, int]:
    """Delete what is past its retention (persistence/retention.py); returns counts."""
    now, settings = rt.now(), rt.settings
    cutoffs = Cutoffs(
        inbox=now - timedelta(seconds=settings.inbox_retention),
        outbox=now - timedelta(seconds=settings.outbox_retention),
        dead_letters=now - timedelta(seconds=settings.dead_letter_retention),
    )
    return prune(rt.engine, cutoffs, batch=batch)


class Every(threading.Thread):
    """A daemon thread that runs `job` every `interval` seconds until stopped."""

    def __init__(self, job: Callable[[], object], *, interval: float, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.job = job
        self.interval = interval
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            try:
                self.job()
            except Exception:
                log.warning(
                    "%s failed; trying again in %.0fs", self.name, self.interval, exc_info=True
                )

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def pruning(runtime: Callable[[], Runtime]) -> Every | None:
    """The retention thread for this worker, or None when IMAGEGROUPS_RETENTION_INTERVAL is 0."""
    interval = runtime().settings.retention_interval
    if not interval:
        return None

    def job() -> None:
        removed = prune_now(runtime())
        if any(removed.values()):
            log.info("retention removed %s", removed)

    return Every(job, interval=interval, name="retention")
