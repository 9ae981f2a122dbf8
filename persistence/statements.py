"""The hot path's SQL: its statements, built once, and the connection that batches them.

The hot path's SQL statements, built once per dialect and reused with bound parameters.

A connection that waits to send what it can, so an event costs few round trips.

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
from functools import cache
from typing import Any

from psycopg import Error as PsycopgError
from psycopg.pq import TransactionStatus
from sqlalchemy import Connection, Executable, any_, bindparam, func, insert, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError

from persistence import db
from persistence.mapping import insert_for
from persistence.models import (
    CatalogReservationRow,
    ImageGroupRow,
    ImageRow,
    JobRow,
    OutboxRow,
    ProcessedEventRow,
    StageRow,
    TransitionRow,
)

INSERT_IMAGES = insert(ImageRow)

INSERT_HISTORY = insert(TransitionRow)

INSERT_OUTBOX = insert(OutboxRow)

# Bind names differ from column names: SET clauses reserve the column-named parameters.
UPDATE_GROUP_STATUS = (
    update(ImageGroupRow)
    .where(ImageGroupRow.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        attempt=bindparam("b_attempt"),
        updated_at=bindparam("b_updated_at"),
        deadline_at=bindparam("b_deadline_at"),
    )
)


@cache
def claim_event(dialect: str) -> Executable:
    """Insert the inbox row, or count one more duplicate on the row there: still one
    statement, and `duplicates` comes back 0 exactly when this call inserted.

    A duplicate is one more delivery, unless it is a redelivery whose number says more (it
    was counted before handling): so a delivery is never counted twice.
    """
    stmt = insert_for(dialect, ProcessedEventRow)
    greatest = func.greatest if dialect == "postgresql" else func.max  # SQLite's scalar max
    row = ProcessedEventRow
    stmt = stmt.on_conflict_do_update(
        index_elements=[row.event_id],
        set_={
            "duplicates": row.duplicates + 1,
            "deliveries": greatest(row.deliveries + 1, stmt.excluded.deliveries),
        },
    )
    return stmt.returning(ProcessedEventRow.duplicates)  # type: ignore[no-any-return]


@cache
def mark_sent(dialect: str) -> Executable:
    """The relay's "sent" marks: on PostgreSQL `= ANY($1)` with the ids as one array, so the
    statement is the same whatever their number (psycopg prepares it once); IN elsewhere."""
    ids: Any = bindparam("b_ids", expanding=True)
    if dialect == "postgresql":
        ids = any_(bindparam("b_ids", type_=postgresql.ARRAY(OutboxRow.event_id.type)))
        matches = OutboxRow.event_id == ids
    else:
        matches = OutboxRow.event_id.in_(ids)
    return update(OutboxRow).where(matches).values(sent_at=bindparam("b_sent_at"), lease_until=None)


@cache
def insert_group(dialect: str) -> Executable:
    stmt = insert_for(dialect, ImageGroupRow).on_conflict_do_nothing()
    return stmt.returning(ImageGroupRow.id)  # type: ignore[no-any-return]


@cache
def reserve_catalog(dialect: str) -> Executable:
    stmt = insert_for(dialect, CatalogReservationRow).on_conflict_do_nothing()
    return stmt.returning(CatalogReservationRow.job_id)  # type: ignore[no-any-return]


@cache
def upsert_job(dialect: str) -> Executable:
    stmt = insert_for(dialect, JobRow)
    return stmt.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=[JobRow.job_id],
        set_={
            "pipeline_phase": stmt.excluded.pipeline_phase,
            "updated_at": stmt.excluded.updated_at,
        },
    )


@cache
def upsert_stage(dialect: str) -> Executable:
    stmt = insert_for(dialect, StageRow)
    keys = {"job_id", "stage"}
    changed = {
        c.name: stmt.excluded[c.name] for c in StageRow.__table__.columns if c.name not in keys
    }
    return stmt.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=[StageRow.job_id, StageRow.stage], set_=changed
    )


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
        reads = [(item, db.cursor_for(dbapi)) for item in waiting if isinstance(item, _Read)]
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

    def _compiled(self, read: _Read) -> db.Read:
        return db.compiled(read.statement, self.dialect, frozenset(read.params or ()))

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
