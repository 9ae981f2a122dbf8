"""The schema check every command makes, without Alembic: this code's head revisions read from
the migration files' text, and the revisions a database records in `alembic_version`.

Importing Alembic and walking its script directory costs a command line more than its query;
persistence/migrate.py stays the authority, used whenever this quick reading is not sure.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

VERSIONS = Path(__file__).resolve().parent / "migrations" / "versions"
VERSION_TABLE = "alembic_version"  # Alembic's default; migrations/env.py keeps it
_REVISION = re.compile(r"^revision(?:\s*:[^=]+)?\s*=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN = re.compile(r"^down_revision(?:\s*:[^=]+)?\s*=\s*(.+)$", re.MULTILINE)
_QUOTED = re.compile(r"['\"]([^'\"]+)['\"]")


@lru_cache(maxsize=1)
def head_revisions() -> frozenset[str] | None:
    """The revisions no other revision builds on; None when a file does not read as expected
    (then only Alembic can tell)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in VERSIONS.glob("*.py"):
        if path.name == "__init__.py":
            continue
        source = path.read_text(encoding="utf-8")
        revision, down = _REVISION.search(source), _DOWN.search(source)
        if revision is None or down is None:
            return None
        revisions.add(revision.group(1))
        parents.update(_QUOTED.findall(down.group(1)))
    heads = revisions - parents
    return frozenset(heads) if heads else None


def recorded_revisions(engine: Engine) -> frozenset[str] | None:
    """What the database says it is at, in one query; None when the query fails (no version
    table: Alembic's own check then tells why). A failure to connect is raised as it is."""
    with engine.connect() as conn:
        try:
            rows = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
        except DBAPIError:
            return None
    return frozenset(str(row[0]) for row in rows)


def at_head(engine: Engine) -> bool:
    """True only when the database is surely at this code's head; False means: ask Alembic."""
    heads = head_revisions()
    return heads is not None and recorded_revisions(engine) == heads
