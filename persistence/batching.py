"""A connection whose write-only statements travel together: fewer round trips per event.

A handler's last writes (history, stage rows, the outbox row, the status update) need no
answer. On PostgreSQL they wait here and go in one psycopg pipeline, together with the
COMMIT when that comes next: one round trip instead of one each. A statement whose result is
read first sends the waiting ones ahead of it, so the order on the server never changes, and
an error is raised at the latest by the commit, inside the same transaction.

Elsewhere (SQLite) every statement runs at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from sqlalchemy import Connection, Executable


class BatchingConnection:
    def __init__(self, conn: Connection) -> None:
        self.raw = conn
        self.dialect = conn.dialect
        self._batches = conn.dialect.name == "postgresql"
        self._waiting: list[tuple[Executable, Any]] = []

    def defer(self, statement: Executable, params: Any = None) -> None:
        """Run a statement whose result nobody reads, now or with the next round trip."""
        if self._batches:
            self._waiting.append((statement, params))
        else:
            self.raw.execute(statement, params)

    def execute(self, statement: Executable, params: Any = None) -> Any:
        self.flush()
        return self.raw.execute(statement, params)

    def scalar(self, statement: Executable, params: Any = None) -> Any:
        self.flush()
        return self.raw.scalar(statement, params)

    def flush(self) -> None:
        if self._waiting:
            with self._pipeline():
                pass

    def commit(self) -> None:
        with self._pipeline():
            self.raw.commit()  # in the same round trip as the waiting writes

    def rollback(self) -> None:
        self._waiting.clear()
        self.raw.rollback()

    def close(self) -> None:
        self._waiting.clear()
        self.raw.close()

    @contextmanager
    def _pipeline(self) -> Iterator[None]:
        waiting, self._waiting = self._waiting, []
        if not waiting:
            yield
            return
        raw: Any = self.raw.connection.dbapi_connection
        with raw.pipeline() if raw is not None else nullcontext():
            for statement, params in waiting:
                self.raw.execute(statement, params)
            yield
