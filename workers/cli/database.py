"""The CLI's database checks: no command creates a SQLite file by reading it, and none runs
on a schema that was never migrated (the operator gets the fix, not a missing relation)."""

from __future__ import annotations

from sqlalchemy.engine import make_url

from persistence.db import sqlite_file
from persistence.revisions import at_head
from workers.cli.output import CommandError
from workers.runtime.root import runtime
from workers.settings import Settings

UPGRADE = "imagegroups db upgrade"


def shown_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def require_existing(settings: Settings) -> None:
    """Refuse before connecting: SQLite creates a missing file on the first connection."""
    path = sqlite_file(settings.database_url)
    if path is None or path.exists():
        return
    if "database_url" in settings.model_fields_set:
        why = f" (DATABASE_URL={shown_url(settings.database_url)}). Check DATABASE_URL"
    else:
        why = (
            f": DATABASE_URL is not set, so the default {settings.database_url} is used. Set "
            "DATABASE_URL to your database (e.g. postgresql+psycopg://user@host/imagegroups)"
        )
    raise CommandError(f"no database exists at {path}{why}, or create this one with: {UPGRADE}")


def require_schema() -> None:
    """The database exists and its schema is this code's head revision."""
    rt = runtime()
    require_existing(rt.settings)
    if at_head(rt.engine):
        return  # the usual case, answered without loading Alembic
    from persistence.migrate import current_revisions, heads, state_of

    current = current_revisions(rt.engine)
    state = state_of(current)
    if state == "current":
        return
    where = shown_url(rt.settings.database_url)
    head = ", ".join(heads())
    if state == "missing":
        problem = f"the database {where} has no schema: it was never migrated"
    elif state == "behind":
        problem = f"the database schema is at revision {', '.join(current)}, behind {head}"
    else:
        raise CommandError(
            f"the database schema is at revision {', '.join(current)}, which this version "
            f"does not know (head {head}): a newer imagegroups migrated it; use that version"
        )
    raise CommandError(f"{problem}; run: {UPGRADE}")
