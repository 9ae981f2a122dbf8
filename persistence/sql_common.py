"""Dialect-aware INSERT helpers shared by the SQL repositories."""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import Dialect
from sqlalchemy.dialects import postgresql, sqlite


class HasDialect(Protocol):
    dialect: Dialect


def insert_for(dialect: str, model: Any) -> Any:
    """An INSERT that knows ON CONFLICT (PostgreSQL and SQLite spell it the same)."""
    return (postgresql if dialect == "postgresql" else sqlite).insert(model)


def dialect_insert(conn: HasDialect, model: Any) -> Any:
    return insert_for(conn.dialect.name, model)
