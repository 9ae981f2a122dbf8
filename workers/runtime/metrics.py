"""What the worker counts for Prometheus, safe under the prefork pool (README: Metrics).

Counting is off (every call a no-op, prometheus_client never imported) until `enable` runs in
the worker's main process, before the pool forks. prometheus_client chooses between in-memory
and file-backed (multiprocess) values once, when it is imported, from the environment
variable PROMETHEUS_MULTIPROC_DIR; so `enable` sets that variable first and imports the
library after it. The pool processes, forked from the main process, inherit both: each writes
its counts to files of its own in that directory, and the main process serves their sum
(workers/runtime/metrics_http.py). The switch is the process's `Counting`, in its runtime.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from domain import StageEnded, StageName
from workers.messages import CATALOG_PARSED, STAGE_FINISHED

#: The events' own tasks (labels are known up front, so each series exists from the start).
EVENT_TASKS = (CATALOG_PARSED.task, STAGE_FINISHED.task)
OUTCOMES = ("applied", "duplicate", "stale", "dead-lettered")
#: Handlers take milliseconds; a lock wait or a slow database shows in the upper buckets.
HANDLING_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Stages take minutes to hours (the default deadlines are 30 and 60 minutes).
STAGE_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 5400, 7200)
ENV = "PROMETHEUS_MULTIPROC_DIR"


class Off:
    """Counting switched off: IMAGEGROUPS_METRICS_PORT is unset, or this is not a worker."""

    def handled(
        self, task: str, outcome: str, seconds: float, ends: list[StageEnded] | None = None
    ) -> None:
        pass

    def dead_lettered_event(self, task: str) -> None:
        pass

    def retried(self, task: str, error_type: str) -> None:
        pass

    def dead_letter(self, error_type: str) -> None:
        pass

    def stage_ended(self, end: StageEnded) -> None:
        pass

    def expired(self, end: StageEnded) -> None:
        pass

    def control_refused(self, command: str, count: int = 1) -> None:
        pass

    def taking_events(self, taking: bool) -> None:
        pass

    def given_back(self) -> None:
        pass

    @contextlib.contextmanager
    def in_progress(self, task: str) -> Iterator[None]:
        yield


class Recorder(Off):
    """The metrics themselves; built only after PROMETHEUS_MULTIPROC_DIR is set."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        # registry=None: the main process serves a registry of its own that reads the files.
        self.events = Counter(
            "imagegroups_events", "Incoming events handled, by task and outcome",
            ["task", "outcome"], registry=None,
        )  # fmt: skip
        self.handling = Histogram(
            "imagegroups_event_handling_seconds",
            "Time to handle one event (transaction and publish), by task",
            ["task"], buckets=HANDLING_BUCKETS, registry=None,
        )  # fmt: skip
        self.retries = Counter(
            "imagegroups_event_retries",
            "Deliveries retried after a transient error, by task and error type",
            ["task", "error_type"], registry=None,
        )  # fmt: skip
        self.dead_letters = Counter(
            "imagegroups_dead_letters", "Messages stored as dead letters, by error type",
            ["error_type"], registry=None,
        )  # fmt: skip
        self.stage_seconds = Histogram(
            "imagegroups_stage_duration_seconds",
            "Time from a stage's request to its result or its deadline, by stage and outcome",
            ["stage", "outcome"], buckets=STAGE_BUCKETS, registry=None,
        )  # fmt: skip
        self.expiries = Counter(
            "imagegroups_stage_deadline_expiries",
            "Stages failed because their deadline passed with no result, by stage",
            ["stage"], registry=None,
        )  # fmt: skip
        self.refusals = _refusals()
        # livesum: a pool process that dies drops out (workers/runtime/metrics_http.py reaps it).
        self.running = Gauge(
            "imagegroups_events_in_progress", "Events being handled right now, by task",
            ["task"], multiprocess_mode="livesum", registry=None,
        )  # fmt: skip
        self._zeros()
        self._gate()

    def _gate(self) -> None:
        """Set in the main process, whose consumer pauses while the database does not answer."""
        from prometheus_client import Counter, Gauge

        self.taking = Gauge(
            "imagegroups_taking_events",
            "1 while the worker consumes events, 0 while its database does not answer",
            multiprocess_mode="livemax", registry=None,
        )  # fmt: skip
        self.taking.set(1)
        self.returned = Counter(
            "imagegroups_events_given_back",
            "Events handed back to the queue because the worker's database did not answer",
            registry=None,
        )  # fmt: skip

    def _zeros(self) -> None:
        """Series exist at 0 from the start: increase() misses a series that is born at 1."""
        for task in EVENT_TASKS:
            for outcome in OUTCOMES:
                self.events.labels(task, outcome)
        for stage in (StageName.DEPLOY, StageName.PXE_BOOT, StageName.VALIDATE):
            self.expiries.labels(stage.value)

    def handled(
        self, task: str, outcome: str, seconds: float, ends: list[StageEnded] | None = None
    ) -> None:
        self.events.labels(task, outcome).inc()
        self.handling.labels(task).observe(seconds)
        for end in ends or ():
            self.stage_ended(end)

    def dead_lettered_event(self, task: str) -> None:
        self.events.labels(task, "dead-lettered").inc()

    def retried(self, task: str, error_type: str) -> None:
        self.retries.labels(task, error_type).inc()

    def dead_letter(self, error_type: str) -> None:
        self.dead_letters.labels(error_type).inc()

    def stage_ended(self, end: StageEnded) -> None:
        outcome = "timed_out" if end.timed_out else end.outcome.value
        seconds = (end.at - end.requested_at).total_seconds()
        self.stage_seconds.labels(end.stage.value, outcome).observe(max(seconds, 0.0))

    def expired(self, end: StageEnded) -> None:
        self.expiries.labels(end.stage.value).inc()
        self.stage_ended(end)

    def control_refused(self, command: str, count: int = 1) -> None:
        self.refusals.labels(command).inc(count)

    def taking_events(self, taking: bool) -> None:
        self.taking.set(1 if taking else 0)

    def given_back(self) -> None:
        self.returned.inc()

    @contextlib.contextmanager
    def in_progress(self, task: str) -> Iterator[None]:
        with self.running.labels(task).track_inprogress():
            yield


def _refusals() -> Any:
    """Counted in the main process (its consumer answers remote control); a count of 0 at
    start makes each refused command's series exist before its first refusal."""
    from prometheus_client import Counter

    return Counter(
        "imagegroups_control_refused",
        "Remote-control commands refused by the worker's policy, by command",
        ["command"], registry=None,
    )  # fmt: skip


def metrics_directory(port: int) -> Path:
    """One directory per port: two workers on one host cannot share a port, so they never
    share (or empty) each other's files, and a restarted worker reuses and empties its own."""
    return Path(tempfile.gettempdir()) / f"imagegroups-metrics-{port}"


class Counting:
    """A process's recorder: off until `enable`; held by the process's runtime
    (workers/runtime/root.py), so the pool processes inherit it when they fork."""

    def __init__(self) -> None:
        self.recorder: Off = Off()
        self.directory: Path | None = None  # where the processes' counts are, once enabled

    def enable(self, path: Path) -> Recorder:
        """Count from now on, in files under `path` (emptied first: counts start at zero).

        Call in the main process before the pool forks and before anything imports
        prometheus_client; the environment variable is how the library (and only it) is told.
        """
        if path.exists():
            shutil.rmtree(path)  # files of an earlier run would be summed in as if they were ours
        path.mkdir(parents=True)
        os.environ[ENV] = str(path)
        from prometheus_client import values

        if not getattr(values.ValueClass, "_multiprocess", False):
            # Imported before the variable was set (by a plugin, say): choose again. Metrics
            # built before this would stay in memory, which is why ours are built only below.
            values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
        counting = Recorder()
        self.directory, self.recorder = path, counting
        return counting

    def process_exited(self, pid: int) -> None:
        """A pool process ends: drop its live gauges (its counters stay: totals never shrink)."""
        if self.directory is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, str(self.directory))  # type: ignore[no-untyped-call]
