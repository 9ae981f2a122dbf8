"""The composition root: what a process is wired with, what it keeps, what it counts, and
how it runs a handler.

Built once per process, lazily: on first use and again after a fork (a pool process must not
share its parent's connections). Entry points (the task adapter, the consumer, the CLI, the
worker's signals, the demo) ask for `runtime()` once and pass what they got down; nothing
below them does.

It is handed its infrastructure and imports none of it: the entry point that knows the
Celery app (the worker's lifecycle, the CLI's write commands, the demo) gives it the
publisher with `install`, and the lifecycle switches on the metrics of `state().counting`.
What a process keeps for its lifetime (health, counting, stranded messages, its main
threads, the database gate) is `state()`: a pool process inherits it when it forks, where
the parent's threads are gone (the lifecycle starts them only in the worker's main process).

- Health: what a running worker knows about itself that the database cannot tell anyone
  else. `imagegroups health` asks every worker over Celery's remote control (the
  `imagegroups_health` inspect command, answered in workers/runtime/lifecycle.py) whether it
  can store dead letters and reach the database right now; the one `WorkerHealth` is
  `state().health`.
- Counting for Prometheus, safe under the prefork pool (README: Metrics): off (every call a
  no-op, prometheus_client never imported) until `enable` runs in the worker's main process,
  before the pool forks. prometheus_client chooses between in-memory and file-backed
  (multiprocess) values once, when it is imported, from PROMETHEUS_MULTIPROC_DIR; so `enable`
  sets that variable first and imports the library after it. The pool processes inherit
  both: each writes its counts to files of its own, and the main process serves their sum
  (workers/runtime/metrics_http.py).
- `execute`: one event or operator command, end to end: its transaction, then its
  follow-ons, published after the commit and outside every lock; a follow-on that cannot be
  sent now stays in the outbox, and the worker's sweep sends it (workers/outbox.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import Engine

from domain import OutboxMessage, StageEnded, StageName
from persistence.db import Probe, is_sqlite, make_engine
from persistence.uow import SqlUnitOfWork, StoreUnitOfWork
from workers.edge.decide import RetryPolicy
from workers.handlers import Deps, Result
from workers.messages import CATALOG_PARSED, STAGE_FINISHED
from workers.outbox import BackgroundDelivery, Deliverer, FollowOns, OutboxRelay, Publisher
from workers.runtime.periodic import Every
from workers.settings import Settings, get_settings

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
    """A process's recorder: off until `enable`; held by the process's state (`state()`),
    so the pool processes inherit it when they fork."""

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


COMMAND = "imagegroups_health"


@dataclass
class Check:
    """One capability of this worker process: working, or failing since when and why."""

    failing_since: datetime | None = None
    error: str | None = None
    failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def succeeded(self) -> None:
        with self._lock:
            self.failing_since, self.error, self.failures = None, None, 0

    def failed(self, error: BaseException) -> None:
        with self._lock:
            self.failing_since = self.failing_since or datetime.now(UTC)
            first = str(error).strip().splitlines()
            self.error = f"{type(error).__name__}: {first[0] if first else ''}".rstrip(": ")
            self.failures += 1

    def report(self) -> dict[str, Any]:
        with self._lock:
            since = None if self.failing_since is None else self.failing_since.isoformat()
            return {"ok": self.error is None, "error": self.error, "failing_since": since}


@dataclass
class WorkerHealth:
    dead_letter_store: Check = field(default_factory=Check)
    database: Check = field(default_factory=Check)
    #: Undecodable or malformed messages waiting for the dead-letter store to come back.
    held_messages: int = 0
    #: False while the database does not answer: the consumer takes no events then.
    taking_events: bool = True

    def report(self) -> dict[str, Any]:
        dead_letters = self.dead_letter_store.report() | {"held_messages": self.held_messages}
        return {
            "dead_letter_store": dead_letters,
            "database": self.database.report(),
            "taking_events": self.taking_events,
        }


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


T = TypeVar("T")


class Stranded(Generic[T]):
    """What a channel could not settle with Redis because Redis was down, kept for the next
    channel that consumes (workers/broker/transport.py): held messages by delivery tag, each
    with its copy when this process has one, given back from the unacknowledged hash or else
    from the copy; and acknowledged messages whose removal from that hash failed."""

    def __init__(self) -> None:
        self._tags: list[T] = []
        self._lock = threading.Lock()

    def keep(self, tags: Iterable[T]) -> None:
        with self._lock:
            self._tags.extend(tags)

    def take(self) -> list[T]:
        with self._lock:
            tags, self._tags = self._tags, []
        return tags


class Server(Protocol):
    """The metrics endpoint (workers/runtime/metrics_http.py), bound before it serves."""

    address: tuple[str, int]

    def start(self, counting: Counting) -> None: ...

    def stop(self) -> None: ...


@dataclass
class MainThreads:
    """What the worker's main process runs beside its consumer (workers/runtime/lifecycle.py)."""

    outbox_sweep: Every | None = None
    retention: Every | None = None
    deadline_sweep: Every | None = None
    metrics_server: Server | None = None
    serving_metrics: bool = False


PROBE_INTERVAL = 1.0

PROBE_TIMEOUT = 2.0


@dataclass
class DatabaseWatch:
    """The worker's view of its database: the probe's last verdict (only the main process
    probes); whether the consumer takes events meanwhile is `WorkerHealth.taking_events`,
    which workers/edge/task.py switches."""

    reachable: bool = True
    error: str | None = None  # the probe's last failure
    given_back: int = 0
    probe: Every | None = field(default=None, repr=False)

    def watch(self, url: str, lock_timeout_ms: int) -> None:
        """Start the probe (once per process); a SQLite file cannot black-hole."""
        if self.probe is not None or is_sqlite(url):
            return
        probe = Probe(url, timeout=PROBE_TIMEOUT, lock_timeout_ms=lock_timeout_ms)
        self.probe = Every(lambda: self._ask(probe), interval=PROBE_INTERVAL, name="db-probe")
        self.probe.start()

    def _ask(self, probe: Probe) -> None:
        try:
            probe.check()
        except Exception as exc:
            state().health.database.failed(exc)
            self.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            self.reachable = False
            return
        state().health.database.succeeded()
        self.reachable = True

    def stop(self) -> None:
        if self.probe is not None:
            self.probe.stop()
            self.probe = None


@dataclass
class ProcessState:
    """What one process holds for as long as it lives (the metrics switch is inherited by
    the pool processes: `enable`, above)."""

    health: WorkerHealth = field(default_factory=WorkerHealth)
    counting: Counting = field(default_factory=Counting)
    stranded: Stranded[tuple[str, Any]] = field(default_factory=Stranded)
    #: Acknowledged messages a closing channel could not remove from Redis (Redis was down).
    stranded_acks: Stranded[str] = field(default_factory=Stranded)
    threads: MainThreads = field(default_factory=MainThreads)
    gate: DatabaseWatch = field(default_factory=DatabaseWatch)


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    engine: Engine
    deps: Deps
    relay: OutboxRelay
    deliverer: Deliverer
    pid: int
    state: ProcessState
    #: The unit of work with the worker's own records too (the edge, relay and CLI use it;
    #: the handlers get the domain's part of the same, deps.new_uow).
    new_store: Callable[[], StoreUnitOfWork]
    #: What a failed delivery is decided by (workers/edge/decide.py), read once from settings.
    retry_policy: RetryPolicy

    def new_uow(self) -> StoreUnitOfWork:
        return self.new_store()

    def now(self) -> datetime:
        return self.deps.clock()

    @property
    def metrics(self) -> Off:
        """What this process counts with (read each time: the worker enables it after build)."""
        return self.state.counting.recorder


class Unwired:
    """The publisher of a process whose entry point handed none: a bug, said at the publish
    (the relay leaves the follow-on in the outbox for the sweep)."""

    def publish(self, message: OutboxMessage) -> None:
        raise RuntimeError(
            f"cannot publish {message.event_id}: no publisher was handed to the composition "
            "root (workers.runtime.root.install)"
        )


class _ThisProcess:
    """The process's runtime and how to build it: the one piece of module state here."""

    def __init__(self) -> None:
        self.current: Runtime | None = None
        self.settings: Settings | None = None  # None: from the environment
        self.publisher: Publisher = Unwired()
        self.batch_marks = False
        self.state = ProcessState()
        self.lock = threading.RLock()  # threads (sweeper, consumer) must share one engine

    def get(self) -> Runtime:
        current = self.current
        if current is not None and current.pid == os.getpid():
            return current
        with self.lock:
            if self.current is None or self.current.pid != os.getpid():
                if self.current is not None:
                    self.current.engine.dispose(close=False)  # the parent's, after a fork
                self.current = self.build()
            return self.current

    def build(self) -> Runtime:
        settings = self.settings or get_settings()
        return _build(settings, self.publisher, self.state, batch_marks=self.batch_marks)

    def reset(self, *, after_fork: bool = False) -> None:
        """Forget the engine; after a fork, leave the parent's connections untouched."""
        current, self.current = self.current, None
        if current is not None and not after_fork:
            current.deliverer.flush()
        if current is not None:
            current.engine.dispose(close=not after_fork)


_process = _ThisProcess()


def runtime() -> Runtime:
    return _process.get()


def reset(*, after_fork: bool = False) -> None:
    _process.reset(after_fork=after_fork)


def configure(settings: Settings | None) -> None:
    """Use these settings from now on (the demo and tests); None goes back to the environment."""
    _process.settings = settings
    _process.reset()


def install(publisher: Publisher, *, batch_marks: bool = False) -> None:
    """Publish follow-ons with `publisher` from now on. In a worker (`batch_marks`), mark
    them sent in batches and publish from a thread (see OutboxRelay); CLI calls stay direct."""
    _process.publisher = publisher
    _process.batch_marks = batch_marks
    _process.reset()


def state() -> ProcessState:
    """What this process keeps for its lifetime; builds nothing (no engine, no connection)."""
    return _process.state


def _build(
    settings: Settings, publisher: Publisher, state: ProcessState, *, batch_marks: bool
) -> Runtime:
    engine = make_engine(settings.database_url, lock_timeout_ms=settings.lock_timeout_ms)
    new_store = _store_of(engine)
    deps = Deps(
        new_uow=new_store,
        clock=_utcnow,
        new_id=_new_id,
        auto_advance=settings.auto_advance,
        stage_timeouts=settings.stage_timeouts,
    )
    relay = OutboxRelay(
        new_store,
        publisher,
        deps.clock,
        mark_every=settings.outbox_mark_interval if batch_marks else None,
    )
    # In a worker, follow-ons leave from a thread of the process (after the commit, as ever);
    # a command line publishes them itself, so it can say what was sent.
    deliverer: Deliverer = BackgroundDelivery(relay) if batch_marks else relay
    return Runtime(
        settings,
        engine,
        deps,
        relay,
        deliverer,
        os.getpid(),
        state,
        new_store,
        settings.retry_policy,
    )


def _store_of(engine: Engine) -> Callable[[], SqlUnitOfWork]:
    """Units of work on the engine; the follow-ons their commits store get ids of their own."""
    follow_ons = FollowOns(_new_id)
    return lambda: SqlUnitOfWork(engine, follow_ons)


@dataclass(frozen=True)
class Done:
    result: Result
    sent: int  # how many of result.messages were published now, in order

    @property
    def unsent(self) -> list[OutboxMessage]:
        return self.result.messages[self.sent :]


def execute(handle: Callable[[Deps], Result], rt: Runtime) -> Done:
    """Run a handler (one transaction), then publish what its transaction wrote to the outbox."""
    result = handle(rt.deps)
    return Done(result, rt.deliverer.deliver(result.messages))
