"""`imagegroups demo`: the whole flow in one process, with embedded workers and a live view."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import IO, Any

from celery import Celery
from celery import signals as celery_signals
from celery.worker import state as worker_state
from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from domain import ImageGroupStatus, StageName
from persistence.db import is_sqlite
from persistence.migrate import upgrade
from workers import bootstrap, simulator
from workers.celery_app import app
from workers.demo_view import (
    STAGES,
    GroupRow,
    Summary,
    View,
    progress,
    read_row,
    read_summary,
    render_summary,
)
from workers.handlers import request_stage
from workers.publishing import EVENTS_QUEUE, catalog_parsed, send, stage_finished
from workers.relay import OutboxSweeper
from workers.settings import Settings, get_settings

POLL_SECONDS = 0.15
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
ROLES = ("slurm_control_node", "slurm_node", "login_node")
WORKER_OPTIONS = {"without_mingle": True, "without_gossip": True, "without_heartbeat": True}
# Nobody can watch an in-memory broker, so no task events; and it is polled every 10 ms
# (the virtual transport's default of 1 s would add a second to every hop).
MEMORY_CONF = {
    "worker_send_task_events": False,
    "task_send_sent_event": False,
    "broker_transport_options": {"polling_interval": 0.01},
}


class DemoError(Exception):
    """The demo cannot run: the database or the broker is out of reach."""


@dataclass(frozen=True)
class GroupPlan:
    """One demo group, and the stage the stand-in pipeline fails on each listed attempt."""

    group_id: str
    job_id: str
    roles: tuple[str, ...]
    fail_on: Mapping[int, StageName] = field(default_factory=dict)


def plan_groups(count: int, prefix: str = "demo") -> list[GroupPlan]:
    """The 2nd of every 5 groups fails on both attempts, the 4th (or a lone group) only once."""
    plans = []
    for index in range(count):
        first, second = STAGES[index % 3], STAGES[(index + 1) % 3]
        fail_on: dict[int, StageName] = {}
        if index % 5 == 1:
            fail_on = {1: first, 2: second}
        elif index % 5 == 3 or count == 1:
            fail_on = {1: first}
        group_id = f"{prefix}-cluster-{index + 1:02d}"
        plans.append(GroupPlan(group_id, str(uuid.uuid4()), ROLES[: 2 + index % 2], fail_on))
    return plans


@dataclass
class ScriptedBehaviour(simulator.Behaviour):
    """The stand-in's answers: the planned failures first, then `fail_rate` at random."""

    plans: dict[str, GroupPlan] = field(default_factory=dict)
    requests: dict[str, tuple[str, int]] = field(default_factory=dict)

    def on_task_prerun(self, sender: Any = None, kwargs: Any = None, **_: Any) -> None:
        # Runs in the simulator's thread just before it answers, so `fails` finds the request.
        event = (kwargs or {}).get("event")
        if getattr(sender, "name", None) in simulator.PIPELINE_QUEUES and isinstance(event, dict):
            payload = event.get("payload") or {}
            attempt = payload.get("attempt")
            self.requests[str(event.get("event_id"))] = (
                str(payload.get("image_group_id")),
                attempt if isinstance(attempt, int) else 0,
            )

    def fails(self, request_event_id: str, stage: str) -> bool:
        group_id, attempt = self.requests.get(request_event_id, ("", 0))
        plan = self.plans.get(group_id)
        if plan is not None and plan.fail_on.get(attempt) == stage:
            return True
        return super().fails(request_event_id, stage)


@dataclass(frozen=True)
class Setup:
    settings: Settings
    broker_url: str
    result_backend: str
    fresh_database: bool


def demo_setup(base: Settings) -> Setup:
    """Servers the user configured are used; otherwise a temp SQLite file and a memory broker."""
    given = base.model_fields_set
    fresh = "database_url" not in given
    url = base.database_url
    if fresh:
        url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='imagegroups-demo-')) / 'demo.db'}"
    # Retries (a stage result racing its group's creation) should take milliseconds here.
    update = dict(
        database_url=url, auto_advance=True, retry_backoff_base=0.05, retry_backoff_max=0.5
    )
    broker = base.celery_broker_url if "celery_broker_url" in given else "memory://localhost/"
    backend = base.celery_result_backend if "celery_result_backend" in given else "cache+memory://"
    return Setup(base.model_copy(update=update), broker, backend, fresh)


def apply_celery_conf(setup: Setup, target: Celery) -> None:
    memory = MEMORY_CONF if setup.broker_url.startswith("memory://") else {}
    target.conf.update(broker_url=setup.broker_url, result_backend=setup.result_backend, **memory)


class EmbeddedWorker:
    """A Celery worker on a thread of this process: no fork, no signal handlers, no banner."""

    def __init__(
        self, celery_app: Celery, name: str, queues: Sequence[str], pool: str, concurrency: int
    ) -> None:
        self.name = name
        self.ready = threading.Event()
        self.controller = celery_app.WorkController(
            hostname=f"demo-{name}-{os.getpid()}@localhost",
            queues=list(queues),
            pool=pool,
            concurrency=concurrency,
            loglevel="WARNING",
            ready_callback=lambda _consumer: self.ready.set(),
            **WORKER_OPTIONS,
        )
        self.thread = threading.Thread(
            target=self.controller.start, name=f"demo-{name}", daemon=True
        )

    def start(self) -> None:
        self.thread.start()
        if not self.ready.wait(START_TIMEOUT):
            raise DemoError(f"the {self.name} worker did not start; is the broker reachable?")


@contextmanager
def scripted(behaviour: ScriptedBehaviour) -> Iterator[None]:
    original, simulator.behaviour = simulator.behaviour, behaviour
    celery_signals.task_prerun.connect(behaviour.on_task_prerun, weak=False)
    try:
        yield
    finally:
        celery_signals.task_prerun.disconnect(behaviour.on_task_prerun)
        simulator.behaviour = original


def stop_workers(workers: Sequence[EmbeddedWorker]) -> None:
    # A warm shutdown, as Celery's own test worker does it: each loop ends its task and exits.
    worker_state.should_stop = 0
    # An idle loop notices only when its wait for a message ends (up to 2 s, twice on the
    # in-memory broker); a no-reply ping to every worker ends the waits now.
    with suppress(KombuOperationalError):
        for _ in range(2):
            app.control.broadcast("ping", reply=False)
    for worker in workers:
        if worker.thread.ident is not None:
            worker.thread.join(STOP_TIMEOUT)
    worker_state.should_stop = None


class DemoRun:
    """Publishes the groups' first events, plays the operator, and watches the database."""

    def __init__(self, plans: Sequence[GroupPlan], where: str) -> None:
        self.plans = plans
        self.where = where
        self.redeployed: list[str] = []
        self.built: set[str] = set()
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def publish(self) -> None:
        for plan in self.plans:
            send(app, catalog_parsed(plan.job_id, plan.group_id, list(plan.roles)))

    def build(self, plan: GroupPlan) -> None:
        # Sent once its catalog is in, as a real pipeline would; sent earlier, it would only
        # be retried until the catalog.parsed event before it had been handled.
        if plan.group_id not in self.built:
            self.built.add(plan.group_id)
            done = stage_finished(
                plan.job_id, "build-image", "succeeded", image_group_id=plan.group_id
            )
            send(app, done)

    def watch(self, view: View, timeout: float) -> list[GroupRow]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.snapshot()
            for plan, row in zip(self.plans, rows, strict=True):
                if row.status == "parsed":
                    self.build(plan)
                elif row.status == ImageGroupStatus.FAILED and row.attempt == 1:
                    self.redeploy(row.group_id, view)
            view.show(rows, self.elapsed())
            if all(row.done for row in rows) or time.monotonic() > deadline:
                return rows
            time.sleep(POLL_SECONDS)

    def redeploy(self, group_id: str, view: View) -> None:
        if group_id in self.redeployed:
            return
        self.redeployed.append(group_id)
        rt = bootstrap.runtime()
        result = request_stage(group_id, StageName.DEPLOY, deps=rt.deps)
        rt.relay.deliver(result.messages)
        view.note(f"operator: imagegroups request deploy {group_id}  (attempt 2)", self.elapsed())

    def snapshot(self) -> list[GroupRow]:
        with bootstrap.runtime().new_uow() as uow:
            return [read_row(uow, p.group_id, p.job_id, len(p.roles)) for p in self.plans]

    def summary(self) -> Summary:
        ids, elapsed = [p.group_id for p in self.plans], self.elapsed()
        with bootstrap.runtime().new_uow() as uow:
            return read_summary(
                uow, ids, redeploys=len(self.redeployed), elapsed=elapsed, where=self.where
            )


def _where(setup: Setup, example: str) -> str:
    url = setup.settings.database_url
    if not setup.fresh_database:
        return make_url(url).render_as_string(hide_password=True)
    return f"{url} (kept; DATABASE_URL={url} imagegroups history {example})"


@cache
def _register_simulator() -> None:
    simulator.register(app)  # once per process: the stand-in pipeline's tasks on our app


def _workers(setup: Setup) -> list[EmbeddedWorker]:
    # One embedded worker for all four queues: two workers in one process would share
    # kombu's event loop, and on Redis one's shutdown closes sockets the other still polls.
    _register_simulator()
    # SQLite takes its write lock per transaction: a second event thread would only wait.
    pool, threads = ("solo", 1) if is_sqlite(setup.settings.database_url) else ("threads", 4)
    queues = [EVENTS_QUEUE, *simulator.PIPELINE_QUEUES]
    return [EmbeddedWorker(app, "worker", queues, pool, threads)]


def _prepare(setup: Setup) -> None:
    bootstrap.configure(setup.settings)
    apply_celery_conf(setup, app)
    try:
        upgrade(setup.settings.database_url)
    except OperationalError as exc:
        raise DemoError(f"cannot migrate the database: {exc.orig or exc}") from None
    with app.connection_for_write() as conn:
        try:
            conn.ensure_connection(max_retries=1)
        except KombuOperationalError as exc:
            raise DemoError(f"cannot reach the broker: {exc}") from None
        if setup.broker_url.startswith("memory://"):
            # In-memory queues live as long as the process: begin with empty ones.
            for queue in (EVENTS_QUEUE, *simulator.PIPELINE_QUEUES):
                conn.default_channel.queue_purge(queue)


def _run(setup: Setup, run: DemoRun, out: IO[str], timeout: float) -> list[GroupRow]:
    workers = _workers(setup)
    # `celery worker` starts its sweeper on worker_ready, which embedded workers never send;
    # without one, a follow-on whose publish failed would wait in the outbox for ever.
    sweeper = OutboxSweeper(lambda: bootstrap.runtime().relay, interval=0.5, grace=1.0)
    with ExitStack() as stack:
        stack.callback(stop_workers, workers)
        for worker in workers:
            worker.start()
        sweeper.start()
        stack.callback(sweeper.stop)
        with progress(out) as view:
            run.started = time.monotonic()
            run.publish()
            rows = run.watch(view, timeout)
        render_summary(run.summary(), out)
    return rows


def main(
    groups: int = 10,
    *,
    out: IO[str] | None = None,
    timeout: float = 60.0,
    fail_rate: float = 0.0,
    delay: float = 0.0,
    seed: int = 7,
) -> int:
    """Run `groups` groups through the whole flow; 0 when every one finished, else 1."""
    out = out or sys.stdout
    if groups < 1:
        print("demo: --groups must be at least 1", file=sys.stderr)
        return 2
    setup = demo_setup(get_settings())
    plans = plan_groups(groups, "demo" if setup.fresh_database else f"demo-{uuid.uuid4().hex[:6]}")
    behaviour = ScriptedBehaviour(fail_rate, delay, seed, plans={p.group_id: p for p in plans})
    run = DemoRun(plans, _where(setup, plans[min(1, groups - 1)].group_id))
    try:
        _prepare(setup)
        with scripted(behaviour):
            rows = _run(setup, run, out, timeout)
    except DemoError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    finally:
        bootstrap.configure(None)
    late = ", ".join(f"{row.group_id} ({row.status})" for row in rows if not row.done)
    if late:
        print(f"demo: timed out after {timeout:.0f}s; unfinished: {late}", file=sys.stderr)
        return 1
    return 0
