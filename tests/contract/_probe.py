from __future__ import annotations

from domain.ports import UnitOfWork
from persistence.memory import MemoryUnitOfWork
from persistence.uow import SqlUnitOfWork
from tests.pg import fresh_database


def f(a: MemoryUnitOfWork, b: SqlUnitOfWork) -> list[UnitOfWork]:
    with fresh_database("x") as url:
        print(url)
    return [a, b]
