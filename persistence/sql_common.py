"""Dialect-aware INSERT helpers shared by the SQL repositories."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def dialect_insert(session: Session, model: Any) -> Any:
    """An INSERT that knows ON CONFLICT (PostgreSQL and SQLite spell it the same)."""
    module = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return module.insert(model)


def insert_ignoring_conflicts(session: Session, model: Any) -> Any:
    """INSERT … ON CONFLICT DO NOTHING: a conflict never aborts the surrounding transaction."""
    return dialect_insert(session, model).on_conflict_do_nothing()
