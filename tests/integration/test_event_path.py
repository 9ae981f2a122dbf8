"""How many of our files one build result's path runs through (bench/event_path.py), ratcheted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.pg import fresh_database
from tests.redis_db import lease_redis_db

REPO = Path(__file__).resolve().parents[2]
#: Our files one build result runs through, queue entry to sent follow-on: a ratchet at
#: today's count, lowered as the path gets shorter (docs/architecture.md draws it).
PATH_FILES = 12


def test_one_build_result_runs_through_no_more_of_our_files_than_the_ratchet() -> None:
    with fresh_database("path") as url, lease_redis_db() as broker:
        command = ["-m", "bench.event_path", "--json", "--database-url", url]
        done = subprocess.run(
            [sys.executable, *command, "--broker-url", broker],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    files = json.loads(done.stdout.strip().splitlines()[-1])
    # The path is all there: the edge, the handler, the aggregate, the store and the relay.
    for step in (
        "workers/broker/transport.py",
        "workers/edge/accept.py",
        "workers/edge/task.py",
        "workers/handlers.py",
        "domain/model.py",
        "persistence/uow.py",
        "workers/outbox.py",
    ):
        assert step in files, files
    assert len(files) <= PATH_FILES, f"{len(files)} files: {sorted(files)}"
