"""The command line answers at once: building its parser loads none of the heavy libraries, and
the schema check every command makes reads this code's head without Alembic.

Structural checks, not timings: bench/cli_latency.py measures how long the commands take.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from persistence import migrate
from persistence.revisions import head_revisions

REPO = Path(__file__).resolve().parents[2]
HEAVY = ["alembic", "celery", "kombu", "psycopg", "pydantic", "pydantic_settings", "sqlalchemy"]


def _loaded_after(code: str) -> list[str]:
    """The heavy top-level packages in sys.modules after `code` runs in a fresh interpreter."""
    probe = (
        f"import json, sys\n{code}\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.splitlines()[-1])
    return loaded


def test_building_the_parser_imports_no_celery_kombu_sqlalchemy_or_pydantic() -> None:
    code = "import workers.cli.main as m\nm.build_parser()"

    assert _loaded_after(code) == []


def test_help_and_a_usage_error_import_none_of_them_either() -> None:
    code = (
        "import contextlib, io\nimport workers.cli.main as m\nquiet = io.StringIO()\n"
        "with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):\n"
        "    assert m.main(['--help']) == 0\n"
        "    assert m.main(['status']) == 2\n"
        "    assert m.main(['dead-letters', 'replay', '--help']) == 0"
    )

    assert _loaded_after(code) == []


def test_the_quick_reading_of_the_head_revision_agrees_with_alembic() -> None:
    assert head_revisions() == frozenset(migrate.heads())
