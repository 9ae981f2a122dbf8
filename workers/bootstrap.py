"""Per-process wiring: engine, unit of work, publisher, relay; built lazily after fork."""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from domain import OutboxMessage, UnitOfWork
from persistence.db import make_engine
from persistence.uow import SqlUnitOfWork
from workers.handlers import Deps
from workers.relay import OutboxRelay
from workers.settings import Settings, get_settings


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class CeleryPublisher:
    """Publishes follow-on events as Celery tasks on their own queues; task id = event_id."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def publish(self, message: OutboxMessage) -> None:
        self.app.send_task(
            message.task_name,
            kwargs={"event": message.body},
            task_id=message.event_id,
            queue=message.queue,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2},
        )


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    deps: Deps
    relay: OutboxRelay
    pid: int

    def new_uow(self) -> UnitOfWork:
        return self.deps.new_uow()


_runtime: Runtime | None = None
_building = threading.RLock()
_settings_override: Settings | None = None
_batch_marks = False


def batch_sent_marks() -> None:
    """In a worker, mark follow-ons sent in batches (see OutboxRelay); CLI calls stay direct."""
    global _batch_marks
    _batch_marks = True
    reset()


def configure(settings: Settings | None) -> None:
    """Use these settings from now on (the demo and tests); None goes back to the environment."""
    global _settings_override
    _settings_override = settings
    reset()


def reset(*, after_fork: bool = False) -> None:
    """Forget the process's engine; after fork, leave the parent's connections untouched."""
    global _runtime
    if _runtime is not None and not after_fork:
        _runtime.relay.flush()
    if _runtime is not None:
        _runtime.engine.dispose(close=not after_fork)
    _runtime = None


def runtime() -> Runtime:
    global _runtime
    current = _runtime
    if current is not None and current.pid == os.getpid():
        return current
    with _building:  # threads (sweeper, consumer, a threads pool) must share one engine
        if _runtime is None or _runtime.pid != os.getpid():
            if _runtime is not None:
                _runtime.engine.dispose(close=False)
            _runtime = _build(_settings_override or get_settings())
        return _runtime


def _build(settings: Settings) -> Runtime:
    from workers.celery_app import app

    engine = make_engine(settings.database_url, lock_timeout_ms=settings.lock_timeout_ms)
    deps = Deps(
        new_uow=lambda: SqlUnitOfWork(engine),
        clock=utcnow,
        new_id=new_id,
        auto_advance=settings.auto_advance,
    )
    relay = OutboxRelay(
        deps.new_uow,
        CeleryPublisher(app),
        utcnow,
        mark_every=settings.outbox_mark_interval if _batch_marks else None,
    )
    return Runtime(settings, engine, deps, relay, os.getpid())
