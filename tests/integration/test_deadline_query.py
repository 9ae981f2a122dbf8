"""The deadline sweep's one query on PostgreSQL: it reads the partial index, and skips locks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text

from persistence.db import make_engine
from persistence.migrate import upgrade
from persistence.repositories import OVERDUE
from tests.pg import fresh_database

pytestmark = pytest.mark.integration

SETTLED = 50_000  # groups with no deadline: what the index must let the sweep ignore
WAITING = 20
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FILL = """
INSERT INTO image_groups (id, job_id, status, attempt, created_at, updated_at, deadline_at)
SELECT 'g-' || n, gen_random_uuid()::text,
       CASE WHEN n <= :waiting THEN 'DEPLOYING' ELSE 'PASSED' END, 1,
       :now - interval '1 day', :now - interval '1 day',
       CASE WHEN n <= :waiting THEN :now - make_interval(mins => n) END
FROM generate_series(1, :total) AS n
"""


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with fresh_database("deadline_plan") as url:
        upgrade(url)
        filled = make_engine(url, lock_timeout_ms=200)
        with filled.begin() as conn:
            conn.execute(text(FILL), {"waiting": WAITING, "now": NOW, "total": SETTLED + WAITING})
        with filled.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
        try:
            yield filled
        finally:
            filled.dispose()


def test_the_sweep_finds_overdue_groups_through_the_partial_index_alone(engine: Engine) -> None:
    # The statement the repository runs, as the driver receives it.
    query = str(OVERDUE.compile(dialect=engine.dialect))
    with engine.connect() as conn:
        lines = list(
            conn.exec_driver_sql("EXPLAIN ANALYZE " + query, {"now": NOW, "limit": 100}).scalars()
        )
        conn.rollback()
    print("\n".join(lines))  # shown with -s: the figure quoted in the report
    assert any("ix_image_groups_deadline" in line for line in lines), lines
    assert not any("Seq Scan" in line for line in lines), lines


def test_a_second_sweeper_skips_the_group_the_first_holds_instead_of_waiting(
    engine: Engine,
) -> None:
    params = {"now": NOW, "limit": 1}
    with engine.connect() as first, engine.connect() as second:
        held = first.execute(OVERDUE, params).one()
        # lock_timeout is 200 ms: waiting for the first sweeper's lock would raise here.
        taken = second.execute(OVERDUE, params).one()
        first.rollback()
        second.rollback()
    assert held.id != taken.id
    assert taken.deadline_at > held.deadline_at  # the next earliest, not a later one
