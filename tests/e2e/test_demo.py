"""`imagegroups demo` runs the whole flow in one process and ends with a summary."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg import fresh_database
from tests.redis_db import lease_redis_db

GROUPS = 6
SERVER_SETTINGS = ("DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")
# The demo's script for 6 groups: the 2nd fails on both attempts, the 4th is rescued by its
# redeploy. Applied events: 4 clean groups x 5, the 2nd 4 + 3, the 4th 3 + 3.
EXPECTED_STATUSES = {"PASSED": 5, "FAILED": 1}
EXPECTED_APPLIED = 4 * 5 + 7 + 6


def demo_command(groups: int) -> list[str]:
    cli = Path(sys.executable).with_name("imagegroups")
    if cli.exists():
        return [str(cli), "demo", "--groups", str(groups)]
    code = f"import sys, workers.standin.demo as d; sys.exit(d.main(groups={groups}))"
    return [sys.executable, "-c", code]


def run_demo(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVER_SETTINGS}
    # The demo's temp SQLite directory lands under tmp_path, so nothing outlives the test.
    env |= {"TMPDIR": str(tmp_path), **settings}
    return subprocess.run(
        demo_command(GROUPS),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_summary(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    out = result.stdout
    assert f"Summary: {GROUPS} groups" in out
    statuses = re.search(r"groups by status:\s+(.+)", out)
    assert statuses is not None, out
    counts = {name: int(n) for name, n in re.findall(r"([A-Z]+) (\d+)", statuses.group(1))}
    assert sum(counts.values()) == GROUPS
    assert counts == EXPECTED_STATUSES
    applied = re.search(r"events by outcome:.*\bapplied (\d+)", out)
    assert applied is not None, out
    assert int(applied.group(1)) == EXPECTED_APPLIED
    assert "dead-lettered 0" in out
    assert "operator redeploys: 2" in out
    for stage in ("deploy", "pxe-boot", "validate"):
        line = rf"^\s+{stage}\s+median\s+[\d.]+ ms\s+max\s+[\d.]+ ms\s+\(\d+ runs\)$"
        assert re.search(line, out, re.MULTILINE), f"no latency line for {stage}:\n{out}"
    assert "Traceback" not in result.stderr, result.stderr


def assert_each_redeploy_follows_its_failure(out: str) -> None:
    """The operator answers what the progress already showed: FAILED first, then redeploy."""
    lines = [line.split("] ", 1)[-1] for line in out.splitlines()]
    redeploys = [i for i, line in enumerate(lines) if line.startswith("operator: ")]
    assert len(redeploys) == 2, out
    for index in redeploys:
        group_id = lines[index].split()[4]
        failed = [i for i, line in enumerate(lines) if line.split()[:2] == [group_id, "FAILED"]]
        assert failed and failed[0] < index, f"{group_id} redeployed before its FAILED line:\n{out}"


def test_demo_runs_every_group_to_the_end_without_any_server(tmp_path: Path) -> None:
    result = run_demo(tmp_path)
    assert_summary(result)
    assert_each_redeploy_follows_its_failure(result.stdout)
    assert "\x1b[" not in result.stdout, "progress on a pipe must be plain lines"
    assert re.search(r"sqlite:////\S+/demo\.db", result.stdout)
    assert result.stderr == "", result.stderr


def test_the_demos_closing_hint_works_pasted_into_a_shell_without_the_venv(
    tmp_path: Path,
) -> None:
    result = run_demo(tmp_path)
    hint = re.search(r"\(kept; (DATABASE_URL=.+ history \S+)\)$", result.stdout, re.MULTILINE)
    assert hint is not None, result.stdout

    pasted = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", hint.group(1)],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},  # a fresh shell: no venv on PATH
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert pasted.returncode == 0, pasted.stderr
    # The hint names the 2nd group, which failed, was redeployed and failed again.
    assert re.search(r"\sFAILED\s+DEPLOYING\s", pasted.stdout), pasted.stdout
    assert re.search(r"\sVALIDATING\s+FAILED\s", pasted.stdout), pasted.stdout


@pytest.fixture
def redis_db() -> Iterator[str]:
    with lease_redis_db() as url:
        yield url


@pytest.mark.integration
def test_demo_uses_the_configured_postgresql_and_redis(tmp_path: Path, redis_db: str) -> None:
    with fresh_database("demo") as database_url:
        result = run_demo(tmp_path, DATABASE_URL=database_url, CELERY_BROKER_URL=redis_db)
        assert_summary(result)
        assert database_url.split("@")[-1] in result.stdout
    assert not list(tmp_path.glob("imagegroups-demo-*")), "no SQLite file with servers given"
