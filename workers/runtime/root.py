"""The composition root: what a process is wired with, what it keeps, and how it runs a
handler.

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

What a running worker knows about itself that the database cannot tell anyone else.

`imagegroups health` asks every worker over Celery's remote control (the `imagegroups_health`
inspect command, answered in workers/runtime/lifecycle.py) whether it can store dead letters
and reach the database right now. The process's one `WorkerHealth` is `state().health`.

One event or operator command, end to end: its transaction, then its follow-ons.

Publishing happens after the commit and outside every lock; a follow-on that cannot be sent
now stays in the outbox, and the worker's sweep sends it (workers/outbox.py).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import Engine

from domain import OutboxMessage
from persistence.db import Probe, is_sqlite, make_engine
from persistence.uow import SqlUnitOfWork, StoreUnitOfWork
from workers.edge.decide import RetryPolicy
from workers.handlers import Deps, Result
from workers.outbox import BackgroundDelivery, Deliverer, FollowOns, OutboxRelay, Publisher
from workers.runtime.metrics import Counting, Off
from workers.runtime.periodic import Every
from workers.settings import Settings, get_settings

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
    the pool processes: workers/runtime/metrics.py)."""

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
