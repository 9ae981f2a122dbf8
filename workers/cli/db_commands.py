"""`imagegroups db`: migrate the schema up or down, and show where it stands."""

from __future__ import annotations

import argparse

from alembic.util import CommandError as AlembicCommandError

from persistence import migrate
from workers.cli.database import UPGRADE, require_existing
from workers.cli.output import CommandError, print_table
from workers.settings import get_settings


def upgrade(_args: argparse.Namespace) -> int:
    url = get_settings().database_url
    migrate.upgrade(url)
    print(f"database is at head ({_revisions(migrate.current_revisions_at(url))})")
    return 0


def current(_args: argparse.Namespace) -> int:
    settings = get_settings()
    require_existing(settings)
    revisions = migrate.current_revisions_at(settings.database_url)
    state = migrate.state_of(revisions)
    notes = {
        "current": "(head)",
        "missing": f"(no schema; run: {UPGRADE})",
        "behind": f"(behind head {_revisions(migrate.heads())}; run: {UPGRADE})",
        "unknown": "(not a revision of this version)",
    }
    print(f"{_revisions(revisions)} {notes[state]}")
    return 0


def history(_args: argparse.Namespace) -> int:
    rows = [
        [f"{r.revision} (head)" if r.is_head else r.revision, r.down_revision or "base", r.title]
        for r in migrate.revisions()
    ]
    print_table(["REVISION", "PARENT", "DESCRIPTION"], rows)
    return 0


def downgrade(args: argparse.Namespace) -> int:
    settings = get_settings()
    require_existing(settings)
    try:
        migrate.downgrade(settings.database_url, args.revision)
    except AlembicCommandError as exc:
        raise CommandError(f"cannot downgrade to {args.revision!r}: {exc}") from None
    print(f"database is at {_revisions(migrate.current_revisions_at(settings.database_url))}")
    return 0


def _revisions(revisions: tuple[str, ...]) -> str:
    return ", ".join(revisions) or "none"
