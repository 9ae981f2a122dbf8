"""Persistence adapters: SQLAlchemy models, repositories, unit of work, Alembic migrations.

The names below load on first use, so a worker that only needs the SQL unit of work never
imports the in-memory fakes.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from persistence.memory import MemoryState, MemoryUnitOfWork
    from persistence.uow import SqlUnitOfWork

_HOMES = {
    "MemoryState": "persistence.memory",
    "MemoryUnitOfWork": "persistence.memory",
    "SqlUnitOfWork": "persistence.uow",
}

__all__ = ["MemoryState", "MemoryUnitOfWork", "SqlUnitOfWork"]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'persistence' has no attribute {name!r}")
