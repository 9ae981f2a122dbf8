"""Dialect-aware INSERT helpers shared by the SQL repositories."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite


def insert_for(dialect: str, model: Any) -> Any:
    """An INSERT that knows ON CONFLICT (PostgreSQL and SQLite spell it the same)."""
    return (postgresql if dialect == "postgresql" else sqlite).insert(model)


def dialect_insert(conn: Connection, model: Any) -> Any:
    return insert_for(conn.dialect.name, model)


def insert_ignoring_conflicts(conn: Connection, model: Any) -> Any:
    """INSERT … ON CONFLICT DO NOTHING: a conflict never aborts the surrounding transaction."""
    return dialect_insert(conn, model).on_conflict_do_nothing()
