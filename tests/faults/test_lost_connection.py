"""A connection lost in a real partition (packets dropped, no reset) holds its locks no longer
than about a minute, on the server and in the worker, with the default settings.

The proxy (tests/faults/proxy.py) drops the packets in the kernel, so both ends' TCP timers
run as they would behind a dead router: the server's keepalives and `tcp_user_timeout`, set
per session by persistence/db.py, are what ends the backend.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from sqlalchemy import Engine, text

from persistence.db import make_engine
from tests.faults.proxy import Proxy, proxy_to
from tests.integration.stack import wait_for
from tests.pg import fresh_database

pytestmark = pytest.mark.faults

#: The bound README states for a lock held by a lost connection ("about a minute").
BOUND = 60.0


@contextmanager
def _table_through_proxy() -> Iterator[tuple[Engine, Proxy, str]]:
    with fresh_database("lostcommit") as url, proxy_to(url) as proxy:
        direct = make_engine(url)
        with direct.begin() as conn:
            conn.execute(text("CREATE TABLE held (id int PRIMARY KEY)"))
            conn.execute(text("INSERT INTO held VALUES (1)"))
        try:
            yield direct, proxy, proxy.url_for(url)
        finally:
            direct.dispose()


def _backend(direct: Engine, pid: int) -> tuple[str, str] | None:
    with direct.connect() as conn:
        row = conn.execute(
            text("SELECT state, wait_event FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
        ).first()
    return None if row is None else (row.state, row.wait_event)


def _gave_up(pgconn: psycopg.pq.abc.PGconn) -> bool:
    try:
        pgconn.consume_input()
    except psycopg.OperationalError:
        return True
    return False


def test_a_row_lock_held_by_a_connection_cut_mid_pipeline_is_released_within_a_minute() -> None:
    with _table_through_proxy() as (direct, proxy, through_proxy):
        worker_side = make_engine(through_proxy)  # a worker's engine, with its settings
        held = worker_side.raw_connection()
        conn = held.driver_connection
        assert isinstance(conn, psycopg.Connection)
        conn.execute("SELECT id FROM held WHERE id = 1 FOR UPDATE")
        pid, pgconn = conn.info.backend_pid, conn.pgconn
        # The handler's next statement goes out pipelined: the server runs it and waits for
        # the rest, `active` and reading, so neither idle_in_transaction_session_timeout
        # nor statement_timeout is running. Then the partition swallows the COMMIT.
        pgconn.nonblocking = 1
        pgconn.enter_pipeline_mode()
        pgconn.send_query_params(b"UPDATE held SET id = id WHERE id = 1", None)
        wait_for(lambda: pgconn.flush() == 0, timeout=5, what="the UPDATE to be sent")
        wait_for(
            lambda: _backend(direct, pid) == ("active", "ClientRead"),
            timeout=10,
            what="the backend to wait for the rest of the pipeline",
        )
        proxy.black_hole(kernel=True)
        cut = time.monotonic()
        pgconn.send_query_params(b"COMMIT", None)
        pgconn.pipeline_sync()
        pgconn.flush()
        wait_for(
            lambda: _backend(direct, pid) is None, timeout=BOUND + 30, what="the backend to end"
        )
        released = time.monotonic() - cut
        wait_for(lambda: _gave_up(pgconn), timeout=BOUND + 30, what="the worker side to give up")
        client = time.monotonic() - cut
        held.invalidate()
        worker_side.dispose()
        with direct.connect() as other:
            other.execute(text("SET lock_timeout = 1000"))
            other.execute(text("SELECT id FROM held WHERE id = 1 FOR UPDATE NOWAIT"))
        print(
            f"\nlock released {released:.1f}s after the cut; the worker side gave up {client:.1f}s"
        )
        assert released <= BOUND, f"the lock outlived the cut by {released:.1f}s"
        assert client <= BOUND, f"the worker side waited {client:.1f}s"


def test_every_worker_connection_asks_both_ends_to_drop_it_after_half_a_minute_of_silence() -> None:
    with fresh_database("keepalive") as url:
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                shown = {
                    name: conn.execute(text(f"SHOW {name}")).scalar_one()
                    for name in (
                        "tcp_keepalives_idle",
                        "tcp_keepalives_interval",
                        "tcp_keepalives_count",
                        "tcp_user_timeout",
                    )
                }
                dbapi = conn.connection.driver_connection
                assert isinstance(dbapi, psycopg.Connection)
                client = dbapi.info.get_parameters()
        finally:
            engine.dispose()
    assert shown == {
        "tcp_keepalives_idle": "10",
        "tcp_keepalives_interval": "5",
        "tcp_keepalives_count": "3",
        "tcp_user_timeout": "30000",
    }
    assert client["tcp_user_timeout"] == "30000"
    assert client["keepalives_idle"] == "10"
