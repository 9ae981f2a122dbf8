"""The demo's plumbing: settings for a server-less run, and Celery workers on threads."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from celery import Celery
from celery.worker import state as worker_state
from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy.exc import OperationalError

from persistence.db import is_sqlite
from persistence.migrate import upgrade
from workers.broker.transport import transport_for
from workers.celery import app
from workers.messages import CATALOG_PARSED, EVENTS_QUEUE, PIPELINE_QUEUES
from workers.outbox import CeleryPublisher
from workers.runtime import root
from workers.settings import Settings
from workers.standin import simulator

MEMORY_BROKER = "memory://localhost/"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
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
class Setup:
    settings: Settings
    broker_url: str
    result_backend: str | None
    fresh_database: bool


def demo_setup(base: Settings) -> Setup:
    """Servers the user configured are used; otherwise a temp SQLite file and a memory broker.

    Without CELERY_BROKER_URL the demo touches no network: no result backend either (it
    would be a server), and never a metrics endpoint (a port of this host, perhaps a real
    worker's).
    """
    given = base.model_fields_set
    fresh = "database_url" not in given
    url = base.database_url
    if fresh:
        url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='imagegroups-demo-')) / 'demo.db'}"
    servers = "celery_broker_url" in given
    broker = base.celery_broker_url if servers else MEMORY_BROKER
    backend = base.celery_result_backend if servers else None
    # Retries (a stage result racing its group's creation) should take milliseconds here.
    update = dict(
        database_url=url,
        celery_broker_url=broker,
        celery_result_backend=backend,
        metrics_port=None,
        auto_advance=True,
        retry_backoff_base=0.05,
        retry_backoff_max=0.5,
    )
    return Setup(base.model_copy(update=update), broker, backend, fresh)


def apply_celery_conf(setup: Setup, target: Celery) -> None:
    """Before the app's first connection: its conf came from the environment (celeryconfig)."""
    memory = MEMORY_CONF if setup.broker_url.startswith("memory://") else {}
    target.conf.update(
        broker_url=setup.broker_url,
        broker_read_url=setup.broker_url,
        broker_write_url=setup.broker_url,
        # celeryconfig picked the transport for the environment's URL, and Celery prefers
        # `broker_transport` to the URL's scheme: left alone, memory:// would still be Redis.
        broker_transport=transport_for(setup.broker_url),
        result_backend=setup.result_backend,
        task_ignore_result=setup.result_backend is None,
        **memory,
    )
    # Celery reads CELERY_RESULT_BACKEND from the environment before its conf; the class
    # given to the app comes before both.
    target.backend_cls = setup.result_backend or "disabled"
    # A worker looks each task up in the current app, and a thread that never set one gets
    # the default: left alone, a bare app configured from the environment alone, whose
    # result backend and broker the embedded worker's threads would use. `celery worker`
    # makes its app the default the same way.
    target.set_default()


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


#: The demo's stand-in pipeline; each run sets how it answers (demo.scripted).
STAND_IN = simulator.StandIn()


@cache
def register_simulator() -> None:
    # Once per process: the stand-in pipeline's tasks on our app. The event worker runs
    # those too, and refuses to start with a task whose request class is not its events'.
    STAND_IN.register(app, Request=app.tasks[CATALOG_PARSED.task].Request)


def embedded_workers(setup: Setup) -> list[EmbeddedWorker]:
    # One embedded worker for all four queues: two workers in one process would share
    # kombu's event loop, and on Redis one's shutdown closes sockets the other still polls.
    register_simulator()
    # SQLite takes its write lock per transaction: a second event thread would only wait.
    pool, threads = ("solo", 1) if is_sqlite(setup.settings.database_url) else ("threads", 4)
    queues = [EVENTS_QUEUE, *PIPELINE_QUEUES]
    return [EmbeddedWorker(app, "worker", queues, pool, threads)]


def prepare(setup: Setup) -> None:
    root.configure(setup.settings)
    root.install(CeleryPublisher(app))  # the operator's redeploys publish on the demo's app
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
            for queue in (EVENTS_QUEUE, *PIPELINE_QUEUES):
                conn.default_channel.queue_purge(queue)
