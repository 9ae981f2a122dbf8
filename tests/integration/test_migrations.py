"""Alembic owns the schema: it round-trips, matches the models, and the database enforces it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg.errors
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, inspect, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import NullPool

from persistence.migrate import alembic_config, downgrade, upgrade
from persistence.models import Base
from tests.pg import fresh_database

pytestmark = pytest.mark.integration

MODEL_TABLES = set(Base.metadata.tables)
NEW_GROUP = (
    "INSERT INTO image_groups (id, job_id, status, created_at, updated_at) "
    "VALUES (:id, :job, :status, now(), now())"
)
NEW_IMAGE = (
    "INSERT INTO images (id, image_group_id, role, image_name) VALUES (:id, :group, :role, 'x.img')"
)


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def tables_and_revision(url: str) -> tuple[set[str], list[str]]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            revisions = list(
                conn.execute(text("SELECT version_num FROM alembic_version")).scalars()
            )
    finally:
        engine.dispose()
    return tables, revisions


def assert_round_trip(url: str) -> None:
    """upgrade head -> downgrade base -> upgrade head, checking what is there at each step."""
    upgrade(url)
    assert tables_and_revision(url) == (MODEL_TABLES | {"alembic_version"}, [head_revision(url)])
    downgrade(url, "base")
    assert tables_and_revision(url) == ({"alembic_version"}, [])
    upgrade(url)
    assert tables_and_revision(url) == (MODEL_TABLES | {"alembic_version"}, [head_revision(url)])


def test_postgres_schema_upgrades_downgrades_to_nothing_and_upgrades_again() -> None:
    with fresh_database("migrate_trip") as url:
        assert_round_trip(url)


def test_sqlite_schema_upgrades_downgrades_to_nothing_and_upgrades_again(tmp_path: Path) -> None:
    assert_round_trip(f"sqlite+pysqlite:///{tmp_path / 'migrations.db'}")


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with fresh_database("migrate") as url:
        upgrade(url)
        migrated = create_engine(url, poolclass=NullPool)
        try:
            yield migrated
        finally:
            migrated.dispose()


@pytest.fixture
def conn(engine: Engine) -> Iterator[Connection]:
    """One transaction per test, rolled back, so the shared database stays empty."""
    with engine.connect() as connection:
        transaction = connection.begin()
        try:
            yield connection
        finally:
            transaction.rollback()


def refused(conn: Connection, sql: str, **params: Any) -> psycopg.Error:
    """Run one statement the database must refuse; return the driver's error."""
    with pytest.raises(IntegrityError) as error, conn.begin_nested():
        conn.execute(text(sql), params)
    assert isinstance(error.value.orig, psycopg.Error)
    return error.value.orig


def add_group(conn: Connection, group: str, job: str | None = None) -> None:
    job_id = job if job is not None else str(uuid.uuid4())
    conn.execute(text(NEW_GROUP), {"id": group, "job": job_id, "status": "BUILT"})


def test_the_database_refuses_a_status_outside_the_nine(conn: Connection) -> None:
    error = refused(conn, NEW_GROUP, id="g-bad", job="job-bad", status="BOGUS")
    assert isinstance(error, psycopg.errors.CheckViolation)
    assert error.diag.constraint_name == "ck_image_groups_status"


def test_the_database_refuses_a_second_group_for_one_job(conn: Connection) -> None:
    add_group(conn, "g-1", job="job-1")
    error = refused(conn, NEW_GROUP, id="g-2", job="job-1", status="BUILT")
    assert isinstance(error, psycopg.errors.UniqueViolation)
    assert error.diag.constraint_name == "uq_image_groups_job_id"


def test_the_database_refuses_two_images_for_one_role_of_a_group(conn: Connection) -> None:
    add_group(conn, "g-1")
    conn.execute(text(NEW_IMAGE), {"id": str(uuid.uuid4()), "group": "g-1", "role": "compute"})
    error = refused(conn, NEW_IMAGE, id=str(uuid.uuid4()), group="g-1", role="compute")
    assert isinstance(error, psycopg.errors.UniqueViolation)
    assert error.diag.constraint_name == "uq_images_image_group_id"


def test_deleting_a_group_row_deletes_its_images(conn: Connection) -> None:
    add_group(conn, "g-1")
    add_group(conn, "g-2")
    for group, role in (("g-1", "compute"), ("g-1", "login"), ("g-2", "compute")):
        conn.execute(text(NEW_IMAGE), {"id": str(uuid.uuid4()), "group": group, "role": role})
    conn.execute(text("DELETE FROM image_groups WHERE id = 'g-1'"))
    left = conn.execute(text("SELECT image_group_id FROM images")).scalars().all()
    assert left == ["g-2"]


def test_the_migrated_schema_matches_the_models(conn: Connection) -> None:
    context = MigrationContext.configure(
        conn, opts={"compare_type": True, "compare_server_default": True}
    )
    assert compare_metadata(context, Base.metadata) == []


def test_the_migrated_sqlite_schema_matches_the_models_too(tmp_path: Path) -> None:
    url = f"sqlite+pysqlite:///{tmp_path / 'compare.db'}"
    upgrade(url)
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as sqlite_conn:
            context = MigrationContext.configure(sqlite_conn, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []
