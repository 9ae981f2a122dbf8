"""Whether PostgreSQL answers right now: one `SELECT 1` within a deadline of our own.

A black-holed path (packets dropped, or a peer that accepts and never answers) raises no
error for a long time: libpq's connect_timeout covers only the connection, and a query on an
open connection waits until TCP gives up. So the probe drives libpq itself, without blocking,
and gives up when its deadline passes, whatever the network does.
"""

from __future__ import annotations

import contextlib
import select
import time

import psycopg
from psycopg import pq
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import make_url

from persistence.db import postgres_connect_args


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
