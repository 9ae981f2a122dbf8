"""Engines, connections and the hot path's SQL: how an engine is made, whether the database
answers, the statements built once, and the connection that batches them.

Engine construction: per-process, lazily, with the locking behaviour each database needs.

Whether PostgreSQL answers right now: one `SELECT 1` within a deadline of our own.

A black-holed path (packets dropped, or a peer that accepts and never answers) raises no
error for a long time: libpq's connect_timeout covers only the connection, and a query on an
open connection waits until TCP gives up. So the probe drives libpq itself, without blocking,
and gives up when its deadline passes, whatever the network does.

SQLAlchemy statements whose rows are read back from a psycopg pipeline: compiled once.

SQLAlchemy reads a statement's result as soon as it has executed it, which in a pipeline is
before the server has answered; so a read that is to share a round trip with others is
compiled by SQLAlchemy and sent on a psycopg cursor of its own, and its rows are read from
that cursor after the pipeline's Sync, with SQLAlchemy's type processing applied as usual.

The hot path's SQL: its statements, built once, and the connection that batches them.

The hot path's SQL statements, built once per dialect and reused with bound parameters.

A connection that waits to send what it can, so an event costs few round trips.

On PostgreSQL, what needs no answer yet waits here and travels in one psycopg pipeline with
the next statement whose answer is needed, and so does BEGIN: the transaction's BEGIN, the
inbox claim and the row lock go in one round trip, and a handler's last writes (history,
stages, the outbox row, the status update) go with the COMMIT. Rows that are new in the
usual case go with the COMMIT as plain INSERTs (`defer(..., taken=...)`): a new catalog's
inbox claim and reservation (the whole event in one round trip), a build result's group. One
that meets a row already there fails the transaction, and its `taken` error tells the caller
to handle the event again the long way. The order on the server is always the order of the
calls, and a failed statement ends the transaction as it would have on its own (the rest of
that pipeline is skipped, and the unit of work rolls back).

BEGIN and COMMIT are ours to send: psycopg sends a BEGIN of its own alone, and then waits
for it. So the psycopg connection is in autocommit mode while it is ours, and BEGIN always
goes ahead of the first statement of a transaction (`_round_trip`, the only way anything is
sent while none is open): one transaction per unit of work, as before.

Elsewhere (SQLite) every statement runs at once, in SQLAlchemy's own transaction.
"""

from __future__ import annotations

import contextlib
import logging
import select
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import psycopg
from psycopg import Error as PsycopgError
from psycopg import pq
from psycopg.conninfo import make_conninfo
from psycopg.pq import TransactionStatus
from psycopg.rows import namedtuple_row
from sqlalchemy import (
    Connection,
    Dialect,
    Engine,
    Executable,
    any_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError

from persistence.models import (
    CatalogReservationRow,
    DeadLetterRow,
    DeliveryRow,
    ImageGroupRow,
    ImageRow,
    JobRow,
    OutboxRow,
    ProcessedEventRow,
    StageRow,
    TransitionRow,
    insert_for,
)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


#: A connection whose peer goes silent (a partition: packets dropped, no reset) is dropped by
#: both ends after this long: TCP keepalives probe it after 10 s of silence, every 5 s, and
#: `tcp_user_timeout` ends it 30 s after the last byte the peer acknowledged (at the next
#: probe, so within about 35 s), also while data waits for an acknowledgement.
SILENCE_TIMEOUT_MS = 30_000

_KEEPALIVE = {"idle": 10, "interval": 5, "count": 3}


def postgres_connect_args(lock_timeout_ms: int) -> dict[str, Any]:
    """libpq parameters of every PostgreSQL connection (the engine's and the worker's probe)."""
    # lock_timeout turns a stuck row lock into an error we retry, never a hung worker.
    server = [
        f"lock_timeout={lock_timeout_ms}",
        "statement_timeout=30000",
        "idle_in_transaction_session_timeout=60000",
        # The server's side of a lost connection: a backend waiting for the rest of a
        # pipelined transaction (a swallowed Sync or COMMIT) runs neither of the two timeouts
        # above and would hold its row locks until the server's keepalives gave up (2 h).
        *(f"tcp_keepalives_{name}={value}" for name, value in _KEEPALIVE.items()),
        f"tcp_user_timeout={SILENCE_TIMEOUT_MS}",
    ]
    return {
        "options": " ".join(f"-c {setting}" for setting in server),
        # The worker's side: a connection attempt, or a query whose answer never comes.
        "connect_timeout": 10,
        "keepalives": 1,
        **{f"keepalives_{name}": value for name, value in _KEEPALIVE.items()},
        "tcp_user_timeout": SILENCE_TIMEOUT_MS,
    }


def make_engine(url: str, *, lock_timeout_ms: int = 5000, pool_size: int = 5) -> Engine:
    """Build an engine; call it after fork, never at import time."""
    if is_sqlite(url):
        return _sqlite_engine(url, lock_timeout_ms)
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        connect_args=postgres_connect_args(lock_timeout_ms),
    )


def _sqlite_engine(url: str, busy_timeout_ms: int) -> Engine:
    connect_args: dict[str, Any] = {"check_same_thread": False, "timeout": busy_timeout_ms / 1000}
    engine = create_engine(url, connect_args=connect_args)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (below) instead of pysqlite's deferred BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # SQLite has no row locks: take the database write lock when the transaction starts,
        # which is what find_by_job_id_for_update needs to exclude a concurrent writer.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names (relative to the working directory); None for in-memory
    SQLite, URI filenames and every other database."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if parsed.query.get("uri") or database.startswith("file:"):
        return None
    return Path(database).resolve()


class NoAnswerError(psycopg.OperationalError):
    """The database did not answer the probe before its deadline."""


def libpq_conninfo(url: str, *, lock_timeout_ms: int, connect_timeout: int) -> str:
    """The libpq connection string of a SQLAlchemy PostgreSQL URL, with the engine's settings."""
    uri = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    params = postgres_connect_args(lock_timeout_ms) | {"connect_timeout": connect_timeout}
    return make_conninfo(uri, **params)


class Probe:
    """Asks over one connection of its own, opened again after any failure."""

    def __init__(self, url: str, *, timeout: float, lock_timeout_ms: int = 5000) -> None:
        self.timeout = timeout
        # libpq's own minimum is 2 s; the deadline below still ends the whole check in time.
        self._conninfo = libpq_conninfo(
            url, lock_timeout_ms=lock_timeout_ms, connect_timeout=max(2, round(timeout))
        )
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def check(self) -> None:
        """Return once the database answered; raise (an OperationalError) otherwise."""
        deadline = time.monotonic() + self.timeout
        try:
            if self._conn is None:
                self._conn = psycopg.Connection.connect(self._conninfo, autocommit=True)
            _select_one(self._conn.pgconn, deadline, self.timeout)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.pgconn.nonblocking = 1  # closing must not wait on a silent peer either
            with contextlib.suppress(Exception):
                conn.close()


def _select_one(pgconn: pq.abc.PGconn, deadline: float, timeout: float) -> None:
    pgconn.nonblocking = 1
    pgconn.send_query(b"SELECT 1")
    while pgconn.flush():
        _wait(pgconn, deadline, timeout, write=True)
    while True:
        pgconn.consume_input()
        if not pgconn.is_busy():
            break
        _wait(pgconn, deadline, timeout)
    results = []
    while (result := pgconn.get_result()) is not None:
        results.append(result)
    if not results or results[0].status != pq.ExecStatus.TUPLES_OK:
        message = pgconn.get_error_message() or "no result"
        raise psycopg.OperationalError(f"SELECT 1 failed: {message}")


def _wait(pgconn: pq.abc.PGconn, deadline: float, timeout: float, *, write: bool = False) -> None:
    left = deadline - time.monotonic()
    fd = pgconn.socket
    ready = select.select([] if write else [fd], [fd] if write else [], [fd], max(left, 0))
    if not any(ready):
        raise NoAnswerError(f"the database did not answer SELECT 1 within {timeout:g}s")


Processor = Callable[[Any], Any]


@dataclass(frozen=True)
class Read:
    """A statement ready for a psycopg cursor: its SQL, and how its values are processed."""

    sql: str
    binds: tuple[tuple[str, Processor], ...]
    results: tuple[Processor | None, ...]
    template: Any  # the compiled statement, which names the bound parameters

    def params(self, values: Mapping[str, Any] | None) -> dict[str, Any]:
        """The bound parameters for psycopg, processed as SQLAlchemy would."""
        params = dict(self.template.construct_params(dict(values or {})))
        for name, process in self.binds:
            params[name] = process(params[name])
        return params

    def rows(self, cursor: Any) -> list[Any]:
        """The rows as named tuples (attributes named as SQLAlchemy's result columns)."""
        rows: list[Any] = cursor.fetchall()
        if rows and len(rows[0]) != len(self.results):
            raise RuntimeError(f"expected {len(self.results)} columns, got {len(rows[0])}")
        if not any(self.results):
            return rows
        return [
            row._make(v if p is None else p(v) for p, v in zip(self.results, row, strict=True))
            for row in rows
        ]


def cursor_for(dbapi_connection: Any) -> Any:
    return dbapi_connection.cursor(row_factory=namedtuple_row)


def compiled(
    statement: Executable, dialect: Dialect, keys: frozenset[str], *, write: bool = False
) -> Read:
    """The statement compiled for `dialect` with parameters named `keys` (cached: the
    statements given are the hot path's, each built once). A `write`'s result is never read,
    so it is compiled as for executemany: a key the database makes (a history row's id) is
    left to the database instead of being fetched first."""
    return _compiled(statement, dialect, keys, write)


@lru_cache(maxsize=256)
def _compiled(statement: Executable, dialect: Dialect, keys: frozenset[str], write: bool) -> Read:
    if dialect.paramstyle != "pyformat":
        raise ValueError(f"pipelined statements need named parameters, not {dialect.paramstyle}")
    template: Any = statement.compile(  # type: ignore[attr-defined]
        dialect=dialect, column_keys=sorted(keys), for_executemany=write
    )
    if template.insert_prefetch or template.update_prefetch:
        raise ValueError("a column default computed in Python needs SQLAlchemy's execution")
    binds = []
    for name, bind in template.binds.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            binds.append((name, process))
    columns: Any = statement.exported_columns  # type: ignore[attr-defined]
    results = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns)
    return Read(template.string, tuple(binds), results, template)


INSERT_IMAGES = insert(ImageRow)

#: Rows sent late, with the COMMIT, where the usual case is new: a conflict fails the
#: transaction (no ON CONFLICT), and the caller goes the long way (`taken`).
INSERT_NEW_GROUP = insert(ImageGroupRow)
INSERT_EVENT = insert(ProcessedEventRow)
INSERT_RESERVATION = insert(CatalogReservationRow)

INSERT_HISTORY = insert(TransitionRow)

INSERT_OUTBOX = insert(OutboxRow)

SET_OUTCOME = (
    update(ProcessedEventRow)
    .where(ProcessedEventRow.event_id == bindparam("b_event_id"))
    .values(outcome=bindparam("b_outcome"))
)

RESET_DELIVERIES = delete(DeliveryRow).where(DeliveryRow.key == bindparam("b_key"))

#: A letter's new status; `replayed_at` is set only when given (a replay), else kept.
SET_LETTER_STATUS = (
    update(DeadLetterRow)
    .where(DeadLetterRow.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        replayed_at=func.coalesce(
            bindparam("b_replayed_at", type_=DeadLetterRow.replayed_at.type),
            DeadLetterRow.replayed_at,
        ),
    )
)

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
    #: For an INSERT: raised instead of the IntegrityError when a unique key it writes is
    #: taken, which the transaction cannot go on from.
    taken: Callable[[], Exception] | None = None


@dataclass(frozen=True, slots=True)
class _Read:
    statement: Executable
    params: Mapping[str, Any] | None
    later: Later


def _raise_taken(error: IntegrityError, writes: list[_Write]) -> None:
    """Raise what a write deferred with `taken` asks for when `error` is a unique key of its
    table already taken (PostgreSQL names the table; SQLite does not, and one write at a time
    is sent there, so the one given is the one that failed)."""
    orig: Any = error.orig
    diag = getattr(orig, "diag", None)
    sqlstate = getattr(orig, "sqlstate", None)
    unique = sqlstate == "23505" or (sqlstate is None and "UNIQUE constraint" in str(orig))
    if not unique:
        return
    table = getattr(diag, "table_name", None)
    for write in writes:
        into = getattr(write.statement, "table", None)
        if write.taken is not None and (table is None or getattr(into, "name", None) == table):
            raise write.taken() from error


class SkippedRestFilter(logging.Filter):
    """psycopg warns that it "ignored" PipelineAborted when it ends a pipeline whose
    statement failed while the rest was still being sent: that is the rest skipped, as
    designed, while the failure itself is raised (a duplicate's late INSERT fails so on a
    busy machine). Every other psycopg warning passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        skipped = len(args) == 2 and isinstance(args[1], psycopg.errors.PipelineAborted)
        return not (skipped and record.msg == "error ignored terminating %r: %s")


logging.getLogger("psycopg").addFilter(SkippedRestFilter())


class BatchingConnection:
    def __init__(self, conn: Connection) -> None:
        self.raw = conn
        self.dialect = conn.dialect
        #: Whether writes wait for the next round trip (PostgreSQL's pipeline) or go at once.
        self.batches = conn.dialect.name == "postgresql"
        self._waiting: list[_Write | _Read] = []
        if self.batches:
            # Reset by the pool when the connection goes back (SQLAlchemy restores the
            # engine's isolation level), so nobody else ever sees autocommit.
            conn.execution_options(isolation_level="AUTOCOMMIT")

    def defer(
        self,
        statement: Executable,
        params: Any = None,
        *,
        taken: Callable[[], Exception] | None = None,
    ) -> None:
        """Run a statement whose result nobody reads, now or with the next round trip.

        As with `read_later`, `statement` must be built once and reused: it goes to psycopg
        compiled once (cached by identity), without SQLAlchemy's execution around it; a list
        of parameters is one executemany. `taken` makes the error an INSERT raises for a
        unique key already there, whichever round trip it travels with."""
        write = _Write(statement, params, taken)
        if self.batches:
            self._waiting.append(write)
            return
        try:
            self.raw.execute(statement, params)
        except IntegrityError as error:
            _raise_taken(error, [write])
            raise

    def read_later(self, statement: Executable, params: Mapping[str, Any] | None = None) -> Later:
        """A read whose rows are wanted, but not before the next statement goes: both
        travel in one round trip, in this order. `statement` must be built once and reused
        (its compiled form is cached by identity)."""
        if not self.batches:
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
        if self.batches:
            self._round_trip(commit=False)

    def commit(self) -> None:
        if self.batches:
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
        reads = [(item, cursor_for(dbapi)) for item in waiting if isinstance(item, _Read)]
        cursors = {id(item): cursor for item, cursor in reads}
        written: list[Any] = []
        try:
            with self._translated(), dbapi.pipeline():
                if begin:
                    dbapi.execute("BEGIN", prepare=False)
                for item in waiting:
                    if isinstance(item, _Read):
                        self._send(item, cursors[id(item)])
                    else:
                        written.append(self._write(item, dbapi))
                if end:
                    dbapi.execute("COMMIT", prepare=False)
        except IntegrityError as error:
            _raise_taken(error, [item for item in waiting if isinstance(item, _Write)])
            raise
        for cursor in written:
            cursor.close()
        for item, cursor in reads:
            item.later._rows = self._compiled(item).rows(cursor)
            cursor.close()

    def _send(self, read: _Read, cursor: Any) -> None:
        compiled = self._compiled(read)
        self._run(cursor, compiled.sql, compiled.params(read.params), many=False)

    def _write(self, write: _Write, dbapi: Any) -> Any:
        """Send a write; its cursor is closed once the pipeline has synced."""
        many = isinstance(write.params, list)
        rows: list[Mapping[str, Any]] = write.params if many else [write.params or {}]
        statement = compiled(write.statement, self.dialect, frozenset(rows[0]), write=True)
        params = [statement.params(row) for row in rows]
        cursor = dbapi.cursor()
        self._run(cursor, statement.sql, params if many else params[0], many=many)
        return cursor

    def _run(self, cursor: Any, sql: str, params: Any, *, many: bool) -> None:
        # What listens to SQLAlchemy's statements (bench/pg_capture.py) sees these too, with
        # the parameters as SQLAlchemy hands them: one row's, or the list for executemany.
        self.raw.dispatch.before_cursor_execute(self.raw, cursor, sql, params, None, many)
        if many:
            cursor.executemany(sql, params)
        else:
            cursor.execute(sql, params)

    def _compiled(self, read: _Read) -> Read:
        return compiled(read.statement, self.dialect, frozenset(read.params or ()))

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
