"""A connection that waits to send what it can, so an event costs few round trips.

On PostgreSQL, what needs no answer yet waits here and travels in one psycopg pipeline with
the next statement whose answer is needed, and so does BEGIN: the transaction's BEGIN, the
inbox claim and the row lock go in one round trip, and a handler's last writes (history,
stages, the outbox row, the status update) go with the COMMIT. The order on the server is
always the order of the calls, and a failed statement ends the transaction as it would have
on its own (the rest of that pipeline is skipped, and the unit of work rolls back).

BEGIN and COMMIT are ours to send: psycopg sends a BEGIN of its own alone, and then waits
for it. So the psycopg connection is in autocommit mode while it is ours, and BEGIN always
goes ahead of the first statement of a transaction (`_round_trip`, the only way anything is
sent while none is open): one transaction per unit of work, as before.

Elsewhere (SQLite) every statement runs at once, in SQLAlchemy's own transaction.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from psycopg import Error as PsycopgError
from psycopg.pq import TransactionStatus
from sqlalchemy import Connection, Executable
from sqlalchemy.exc import DBAPIError

from persistence import pipelined


class Later:
    """The rows of a read that waits to travel with the next round trip."""

    __slots__ = ("_conn", "_rows")

    def __init__(self, conn: BatchingConnection, rows: list[Any] | None = None) -> None:
        self._conn = conn
        self._rows = rows

    def rows(self) -> list[Any]:
        """The rows; asked before the read was sent, this sends it (and what waits before)."""
        if self._rows is None:
            self._conn.flush()
        if self._rows is None:
            raise RuntimeError("the read was dropped by a rollback before it was sent")
        return self._rows


@dataclass(frozen=True, slots=True)
class _Write:
    statement: Executable
    params: Any


@dataclass(frozen=True, slots=True)
class _Read:
    statement: Executable
    params: Mapping[str, Any] | None
    later: Later


class BatchingConnection:
    def __init__(self, conn: Connection) -> None:
        self.raw = conn
        self.dialect = conn.dialect
        self._batches = conn.dialect.name == "postgresql"
        self._waiting: list[_Write | _Read] = []
        if self._batches:
            # Reset by the pool when the connection goes back (SQLAlchemy restores the
            # engine's isolation level), so nobody else ever sees autocommit.
            conn.execution_options(isolation_level="AUTOCOMMIT")

    def defer(self, statement: Executable, params: Any = None) -> None:
        """Run a statement whose result nobody reads, now or with the next round trip."""
        if self._batches:
            self._waiting.append(_Write(statement, params))
        else:
            self.raw.execute(statement, params)

    def read_later(self, statement: Executable, params: Mapping[str, Any] | None = None) -> Later:
        """A read whose rows are wanted, but not before the next statement goes: both
        travel in one round trip, in this order. `statement` must be built once and reused
        (its compiled form is cached by identity)."""
        if not self._batches:
            return Later(self, list(self.raw.execute(statement, params).all()))
        later = Later(self)
        self._waiting.append(_Read(statement, params, later))
        return later

    def rows(self, statement: Executable, params: Mapping[str, Any] | None = None) -> list[Any]:
        """The rows of a read, sent now with BEGIN and whatever waits: one round trip."""
        return self.read_later(statement, params).rows()

    def execute(self, statement: Executable, params: Any = None) -> Any:
        self.flush()
        return self.raw.execute(statement, params)

    def scalar(self, statement: Executable, params: Any = None) -> Any:
        self.flush()
        return self.raw.scalar(statement, params)

    def flush(self) -> None:
        """Send what waits, behind a BEGIN when no transaction is open yet."""
        if self._batches:
            self._round_trip(commit=False)

    def commit(self) -> None:
        if self._batches:
            self._round_trip(commit=True)  # the waiting writes and COMMIT: one round trip
        self.raw.commit()  # SQLAlchemy's side; psycopg has nothing left to send

    def rollback(self) -> None:
        self._waiting.clear()
        self.raw.rollback()

    def close(self) -> None:
        self._waiting.clear()
        self.raw.close()

    def _round_trip(self, *, commit: bool) -> None:
        waiting, self._waiting = self._waiting, []
        dbapi: Any = self.raw.connection.dbapi_connection
        idle = dbapi.info.transaction_status == TransactionStatus.IDLE
        begin = idle and (bool(waiting) or not commit)
        end = commit and not (idle and not waiting)
        if not (begin or waiting or end):
            return
        if not self.raw.in_transaction():
            self.raw.begin()  # SQLAlchemy's marker only: it sends nothing in autocommit
        reads = [(item, pipelined.cursor_for(dbapi)) for item in waiting if isinstance(item, _Read)]
        cursors = {id(item): cursor for item, cursor in reads}
        with self._translated(), dbapi.pipeline():
            if begin:
                dbapi.execute("BEGIN", prepare=False)
            for item in waiting:
                if isinstance(item, _Write):
                    self.raw.execute(item.statement, item.params)
                else:
                    self._send(item, cursors[id(item)])
            if end:
                dbapi.execute("COMMIT", prepare=False)
        for item, cursor in reads:
            item.later._rows = self._compiled(item).rows(cursor)
            cursor.close()

    def _send(self, read: _Read, cursor: Any) -> None:
        sql, params = (compiled := self._compiled(read)).sql, compiled.params(read.params)
        # What listens to SQLAlchemy's statements (bench/pg_capture.py) sees these too.
        self.raw.dispatch.before_cursor_execute(self.raw, cursor, sql, params, None, False)
        cursor.execute(sql, params)

    def _compiled(self, read: _Read) -> pipelined.Read:
        return pipelined.compiled(read.statement, self.dialect, frozenset(read.params or ()))

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """A failure raises what SQLAlchemy raises for its own statements: a DBAPIError,
        with the connection invalidated when it is lost."""
        try:
            yield
        except PsycopgError as error:
            dbapi = self.raw.connection.dbapi_connection
            lost = self.dialect.is_disconnect(error, dbapi, None)  # type: ignore[arg-type]
            if lost:
                self.raw.invalidate(error)
            raise DBAPIError.instance(
                None, None, error, PsycopgError, connection_invalidated=lost, dialect=self.dialect
            ) from error
