"""The composition root: everything a process needs, built once per process, lazily.

Built on first use and again after a fork (a pool process must not share its parent's
connections). Entry points (the task adapter, the consumer, the CLI, the worker's signals,
the demo) ask for `runtime()` once and pass what they got down; nothing below them does.
"""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from domain import UnitOfWork
from persistence.db import make_engine
from persistence.uow import SqlUnitOfWork
from workers.handlers import Deps
from workers.publisher import CeleryPublisher
from workers.relay import BackgroundDelivery, Deliverer, OutboxRelay
from workers.settings import Settings, get_settings


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    engine: Engine
    deps: Deps
    relay: OutboxRelay
    deliverer: Deliverer
    pid: int

    def new_uow(self) -> UnitOfWork:
        return self.deps.new_uow()

    def now(self) -> datetime:
        return self.deps.clock()


class _ThisProcess:
    """The process's runtime and how to build it: the one piece of module state here."""

    def __init__(self) -> None:
        self.current: Runtime | None = None
        self.settings: Settings | None = None  # None: from the environment
        self.batch_marks = False
        self.lock = threading.RLock()  # threads (sweeper, consumer) must share one engine

    def get(self) -> Runtime:
        current = self.current
        if current is not None and current.pid == os.getpid():
            return current
        with self.lock:
            if self.current is None or self.current.pid != os.getpid():
                if self.current is not None:
                    self.current.engine.dispose(close=False)  # the parent's, after a fork
                self.current = _build(self.settings or get_settings(), self.batch_marks)
            return self.current

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


def batch_sent_marks() -> None:
    """In a worker, mark follow-ons sent in batches (see OutboxRelay); CLI calls stay direct."""
    _process.batch_marks = True
    _process.reset()


def _event_app() -> Any:
    from workers.celery import app

    return app


def _build(settings: Settings, batch_marks: bool) -> Runtime:
    engine = make_engine(settings.database_url, lock_timeout_ms=settings.lock_timeout_ms)
    deps = Deps(
        new_uow=lambda: SqlUnitOfWork(engine),
        clock=_utcnow,
        new_id=_new_id,
        auto_advance=settings.auto_advance,
        stage_timeouts=settings.stage_timeouts,
    )
    relay = OutboxRelay(
        deps.new_uow,
        CeleryPublisher(load_app=_event_app),  # Celery loads on the first publish only
        deps.clock,
        mark_every=settings.outbox_mark_interval if batch_marks else None,
    )
    # In a worker, follow-ons leave from a thread of the process (after the commit, as ever);
    # a command line publishes them itself, so it can say what was sent.
    deliverer: Deliverer = BackgroundDelivery(relay) if batch_marks else relay
    return Runtime(settings, engine, deps, relay, deliverer, os.getpid())
