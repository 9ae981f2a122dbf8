"""Run Alembic programmatically: the `imagegroups db` commands, health and the tests use this."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

#: missing: never migrated (no revision recorded); behind: an older revision of this code;
#: current: at head; unknown: a revision this code does not have (a newer version's).
SchemaState = Literal["missing", "behind", "current", "unknown"]


@dataclass(frozen=True, slots=True)
class Revision:
    revision: str
    down_revision: str | None
    title: str
    is_head: bool


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def scripts() -> ScriptDirectory:
    return ScriptDirectory(str(MIGRATIONS))


def heads() -> tuple[str, ...]:
    return tuple(scripts().get_heads())


def revisions() -> list[Revision]:
    """This code's revisions, newest first."""
    found = []
    for script in scripts().walk_revisions():
        down = script.down_revision
        found.append(
            Revision(
                revision=script.revision,
                down_revision=down if isinstance(down, str) or down is None else ",".join(down),
                title=(script.doc or "").strip().splitlines()[0] if script.doc else "",
                is_head=script.is_head,
            )
        )
    return found


def current_revisions(engine: Engine) -> tuple[str, ...]:
    """The revisions recorded in the database; empty when it was never migrated."""
    with engine.connect() as conn:
        return tuple(MigrationContext.configure(conn).get_current_heads())


def current_revisions_at(url: str) -> tuple[str, ...]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        return current_revisions(engine)
    finally:
        engine.dispose()


def schema_state(engine: Engine) -> SchemaState:
    """Whether the database's schema is the one this code expects (one query, no writes)."""
    return state_of(current_revisions(engine))


def state_of(current: tuple[str, ...]) -> SchemaState:
    if not current:
        return "missing"
    script = scripts()
    if set(current) == set(script.get_heads()):
        return "current"
    try:
        known = all(script.get_revision(rev) is not None for rev in current)
    except CommandError:  # alembic's "can't locate revision"
        known = False
    return "behind" if known else "unknown"
