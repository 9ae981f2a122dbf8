"""A pool process forked while another thread held SQLAlchemy's mapper lock must not hang."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: In a fresh interpreter: another thread holds the lock SQLAlchemy configures mappers under
#: (as a thread of the main process can at the moment the pool forks), and an ORM statement
#: of ours compiles meanwhile. It takes the lock only if mappers are left to configure.
HELD_WHILE_COMPILING = """
import threading
from sqlalchemy import select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import mapperlib
import persistence.models as models

held, release = threading.Event(), threading.Event()

def hold():
    with mapperlib._CONFIGURE_MUTEX:
        held.set()
        release.wait(60)

threading.Thread(target=hold, daemon=True).start()
assert held.wait(10)
statement = select(models.OutboxRow).where(models.OutboxRow.sent_at.is_(None))
print(statement.compile(dialect=postgresql.dialect()).string.split()[0])
release.set()
"""


def test_an_orm_statement_compiles_while_another_thread_holds_the_mapper_lock() -> None:
    done = subprocess.run(
        [sys.executable, "-c", HELD_WHILE_COMPILING],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,  # hangs without the models' configure_mappers(): the lock is never let go
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["SELECT"]
