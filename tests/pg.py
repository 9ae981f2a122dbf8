"""Throwaway PostgreSQL databases for tests: created empty, yielded as a URL, dropped after."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

DEFAULT_BASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
_PREFIX = re.compile(r"[a-z0-9_]{1,32}")


def base_url() -> URL:
    """The maintenance database the test databases are created from."""
    return make_url(os.environ.get("IMAGEGROUPS_TEST_PG", DEFAULT_BASE_URL))


def _admin_engine(url: URL) -> Engine:
    # CREATE/DROP DATABASE cannot run inside a transaction block.
    return create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)


@contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """Create `ig_test_<prefix>_<random>`, yield its SQLAlchemy URL, drop it afterwards."""
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"prefix must match {_PREFIX.pattern}, got {prefix!r}")
    base = base_url()
    name = f"ig_test_{prefix}_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine(base)
    try:
        with admin.connect() as conn:
            # template0 accepts no connections, so concurrent creations never collide on it.
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
        try:
            yield base.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@contextmanager
def database_to_create(prefix: str) -> Iterator[tuple[str, str]]:
    """A new name and its URL, for a command under test to CREATE; dropped afterwards."""
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"prefix must match {_PREFIX.pattern}, got {prefix!r}")
    base = base_url()
    name = f"ig_test_{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        yield name, base.set(database=name).render_as_string(hide_password=False)
    finally:
        admin = _admin_engine(base)
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            admin.dispose()
