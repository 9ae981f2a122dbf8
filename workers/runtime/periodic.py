"""The one way a process runs a job on a timer: a daemon thread, `job` every `interval`.

The outbox sweep, retention, the deadline sweep and the database probe are all one of
these; a failing job is logged (and told to `health`, when given) and
tried again at the next tick, so no loop dies of one error.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)


class Health(Protocol):
    """Where a job reports whether its last run worked (the worker's health check)."""

    def succeeded(self) -> None: ...

    def failed(self, error: BaseException) -> None: ...


class Every(threading.Thread):
    """A daemon thread that runs `job` every `interval` seconds until stopped."""

    def __init__(
        self,
        job: Callable[[], object],
        *,
        interval: float,
        name: str,
        health: Health | None = None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.job = job
        self.interval = interval
        self.health = health
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.tick()

    def tick(self) -> None:
        """One run of the job, its failure logged and reported, never raised."""
        try:
            self.job()
        except Exception as exc:
            if self.health is not None:
                self.health.failed(exc)
            log.warning("%s failed; trying again in %.1fs", self.name, self.interval, exc_info=True)
        else:
            if self.health is not None:
                self.health.succeeded()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop ticking and wait up to `timeout` seconds for a run in progress to end."""
        self._halt.set()
        if self.is_alive():
            self.join(timeout=timeout)
