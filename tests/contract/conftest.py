"""Backends for the repository contract: in-memory, PostgreSQL and SQLite, one suite for all."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from persistence.db import make_engine
from persistence.memory import MemoryState, MemoryUnitOfWork
from persistence.migrate import upgrade
from persistence.models import Base
from persistence.uow import SqlUnitOfWork, StoreUnitOfWork
from tests.pg import fresh_database
from workers.outbox import FollowOns

NewUow = Callable[[], StoreUnitOfWork]

#: Backends that really hold a lock while a unit of work is open: SQLite is left out because
#: its only lock is the whole database, so "another unit of work meanwhile" cannot run.
LOCKING_BACKENDS = ["memory", "postgresql"]
ALL_BACKENDS = ["memory", "postgresql", "sqlite"]


@pytest.fixture(scope="session")
def postgresql_sessions() -> Iterator[Engine]:
    with fresh_database("contract") as url:
        upgrade(url)
        engine = make_engine(url, lock_timeout_ms=5000)
        try:
            yield engine
        finally:
            engine.dispose()


@pytest.fixture(scope="session")
def sqlite_sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    path: Path = tmp_path_factory.mktemp("contract") / "contract.db"
    url = f"sqlite+pysqlite:///{path}"
    upgrade(url)
    engine = make_engine(url, lock_timeout_ms=5000)
    try:
        yield engine
    finally:
        engine.dispose()


def _emptied(engine: Engine) -> Engine:
    """Start each test from empty tables (done before, so a failed test cannot leak rows)."""
    tables = Base.metadata.sorted_tables
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            names = ", ".join(t.name for t in tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(tables):
                conn.execute(table.delete())
    return engine


def _backend(request: pytest.FixtureRequest) -> NewUow:
    name: str = request.param
    if name == "memory":
        state = MemoryState()
        return lambda: MemoryUnitOfWork(state, FollowOns())
    sessions = _emptied(request.getfixturevalue(f"{name}_sessions"))
    return lambda: SqlUnitOfWork(sessions, FollowOns())


@pytest.fixture(params=ALL_BACKENDS)
def new_uow(request: pytest.FixtureRequest) -> NewUow:
    """Opens a fresh unit of work on this test's backend; all of them share one store."""
    return _backend(request)


@pytest.fixture(params=LOCKING_BACKENDS)
def new_locking_uow(request: pytest.FixtureRequest) -> NewUow:
    return _backend(request)
