"""`imagegroups` run through `main(argv)` in this process, its result shaped like a finished
process's, so a test reads exit code, stdout and stderr alike either way. Subprocesses stay for
what needs one: the entry point, exit codes end to end, and commands that publish (their broker
comes from the environment the Celery app reads once per process)."""

from __future__ import annotations

import contextlib
import io
import subprocess

from workers.cli.main import main
from workers.runtime import root
from workers.settings import Settings


def run_main(argv: list[str], **settings: str) -> subprocess.CompletedProcess[str]:
    """Run one command with these settings, by their environment names (DATABASE_URL=...)."""
    out, err = io.StringIO(), io.StringIO()
    root.configure(Settings.model_validate(settings))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        root.configure(None)
    return subprocess.CompletedProcess(["imagegroups", *argv], code, out.getvalue(), err.getvalue())
