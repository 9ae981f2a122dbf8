"""SQLAlchemy statements whose rows are read back from a psycopg pipeline: compiled once.

SQLAlchemy reads a statement's result as soon as it has executed it, which in a pipeline is
before the server has answered; so a read that is to share a round trip with others is
compiled by SQLAlchemy and sent on a psycopg cursor of its own, and its rows are read from
that cursor after the pipeline's Sync, with SQLAlchemy's type processing applied as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from psycopg.rows import namedtuple_row
from sqlalchemy import Dialect, Executable

Processor = Callable[[Any], Any]


@dataclass(frozen=True)
class Read:
    """A statement ready for a psycopg cursor: its SQL, and how its values are processed."""

    sql: str
    binds: tuple[tuple[str, Processor], ...]
    results: tuple[Processor | None, ...]
    template: Any  # the compiled statement, which names the bound parameters

    def params(self, values: Mapping[str, Any] | None) -> dict[str, Any]:
        """The bound parameters for psycopg, processed as SQLAlchemy would."""
        params = dict(self.template.construct_params(dict(values or {})))
        for name, process in self.binds:
            params[name] = process(params[name])
        return params

    def rows(self, cursor: Any) -> list[Any]:
        """The rows as named tuples (attributes named as SQLAlchemy's result columns)."""
        rows: list[Any] = cursor.fetchall()
        if rows and len(rows[0]) != len(self.results):
            raise RuntimeError(f"expected {len(self.results)} columns, got {len(rows[0])}")
        if not any(self.results):
            return rows
        return [
            row._make(v if p is None else p(v) for p, v in zip(self.results, row, strict=True))
            for row in rows
        ]


def cursor_for(dbapi_connection: Any) -> Any:
    return dbapi_connection.cursor(row_factory=namedtuple_row)


def compiled(statement: Executable, dialect: Dialect, keys: frozenset[str]) -> Read:
    """The statement compiled for `dialect` with parameters named `keys` (cached: the
    statements given are the hot path's, each built once)."""
    return _compiled(statement, dialect, keys)


@lru_cache(maxsize=256)
def _compiled(statement: Executable, dialect: Dialect, keys: frozenset[str]) -> Read:
    if dialect.paramstyle != "pyformat":
        raise ValueError(f"pipelined reads need named parameters, not {dialect.paramstyle}")
    template: Any = statement.compile(  # type: ignore[attr-defined]
        dialect=dialect, column_keys=sorted(keys)
    )
    if template.insert_prefetch or template.update_prefetch:
        raise ValueError("a column default computed in Python needs SQLAlchemy's execution")
    binds = []
    for name, bind in template.binds.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            binds.append((name, process))
    columns: Any = statement.exported_columns  # type: ignore[attr-defined]
    results = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns)
    return Read(template.string, tuple(binds), results, template)
