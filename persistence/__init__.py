"""Persistence adapters: SQLAlchemy models, repositories, unit of work, Alembic migrations."""

from __future__ import annotations

from persistence.memory import MemoryState, MemoryUnitOfWork
from persistence.uow import SqlUnitOfWork

__all__ = ["MemoryState", "MemoryUnitOfWork", "SqlUnitOfWork"]
