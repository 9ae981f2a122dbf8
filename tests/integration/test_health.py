"""`imagegroups health` on a database that is missing or was never migrated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pg import fresh_database
from tests.redis_db import lease_redis_db

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).with_name("imagegroups"))


def _health(cwd: Path, **env: str) -> tuple[int, dict[str, object]]:
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
    done = subprocess.run(
        [CLI, "health", "--json"], env=environment | env, cwd=cwd, capture_output=True, text=True
    )
    return done.returncode, json.loads(done.stdout)


def test_health_names_a_database_that_was_never_migrated_and_how_to_fix_it(tmp_path: Path) -> None:
    with fresh_database("health") as url, lease_redis_db() as broker:
        code, report = _health(tmp_path, DATABASE_URL=url, CELERY_BROKER_URL=broker)
    assert code == 1 and report["healthy"] is False
    database = report["database"]
    assert isinstance(database, dict) and database["ok"] is False
    assert "never migrated" in database["error"] and "imagegroups db upgrade" in database["error"]


def test_health_without_a_database_url_creates_no_database_file(tmp_path: Path) -> None:
    with lease_redis_db() as broker:
        code, report = _health(tmp_path, CELERY_BROKER_URL=broker)
    assert code == 1
    database = report["database"]
    assert isinstance(database, dict) and "DATABASE_URL is not set" in database["error"]
    assert list(tmp_path.iterdir()) == []
