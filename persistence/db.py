"""Engine construction: per-process, lazily, with the locking behaviour each database needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


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
