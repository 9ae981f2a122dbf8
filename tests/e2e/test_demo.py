"""`imagegroups demo` runs the whole flow in one process and ends with a summary."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.pg import fresh_database
from tests.redis_db import lease_redis_db

ROOT = Path(__file__).resolve().parents[2]
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
    assert_each_failed_line_names_its_stage_and_reason(result.stdout)
    assert "\x1b[" not in result.stdout, "progress on a pipe must be plain lines"
    assert re.search(r"database: sqlite:////\S+/demo\.db \(kept\)$", result.stdout, re.MULTILINE)
    assert result.stderr == "", result.stderr


def assert_each_failed_line_names_its_stage_and_reason(out: str) -> None:
    failed = [line for line in out.splitlines() if line.startswith("[") and " FAILED " in line]
    assert len(failed) == 3, out  # the 2nd group twice, the 4th once
    for line in failed:
        why = r"\((deploy|pxe-boot|validate) failed: SIMULATED_FAILURE: the demo's script fails \1"
        assert re.search(why + r" on attempt [12]\)$", line), line


def test_the_demos_closing_hint_works_pasted_into_a_shell_without_the_venv(
    tmp_path: Path,
) -> None:
    result = run_demo(tmp_path)
    # The hint is the last line, a command and nothing else, so it can be copied whole.
    last = result.stdout.splitlines()[-1]
    hint = re.fullmatch(r"  (DATABASE_URL=\S+ \S+ history \S+)", last)
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


# The server-less demo, where no server can be reached (tests/e2e/offline.py runs it in a
# network namespace of its own), and beside a Redis on its old default port 6379.
OFFLINE_RUNS = 20
OFFLINE_RUN_TIMEOUT = 30.0  # one run takes 2 s alone, up to 8 s on a loaded 2-core machine
#: 20 runs take about 40 s alone; the fixture's limit lets every run take its whole timeout,
#: so a hung run is reported by the driver (with its threads' stacks), not cut off by pytest.
BESIDE_REDIS_LIMIT = OFFLINE_RUNS * OFFLINE_RUN_TIMEOUT + 60
# Settings a developer's shell may hold for a real worker; the server-less demo ignores them.
WORKER_SHELL = {
    "CELERY_RESULT_BACKEND": "redis://127.0.0.1:6379/1",
    "IMAGEGROUPS_METRICS_PORT": "9808",
}


def offline(tmp_path: Path, *args: str, timeout: float) -> dict[str, Any]:
    missing = [tool for tool in ("unshare", "ip") if shutil.which(tool) is None]
    assert not missing, f"these tests need util-linux's unshare and iproute2's ip: {missing}"
    env = {k: v for k, v in os.environ.items() if k not in SERVER_SETTINGS}
    env |= {"TMPDIR": str(tmp_path), **WORKER_SHELL}
    driver = [sys.executable, "-m", "tests.e2e.offline", *args]
    argv = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *driver]
    done = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    report: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return report


def network_use(run: dict[str, Any]) -> list[str]:
    return [line for line in run["stderr"].splitlines() if line.startswith("network: ")]


def test_demo_finishes_in_a_network_namespace_where_nothing_listens(tmp_path: Path) -> None:
    report = offline(tmp_path, "--groups", "2", "--timeout", str(OFFLINE_RUN_TIMEOUT), timeout=60)

    [run] = report["runs"]
    assert run["returncode"] == 0, f"stdout:\n{run['stdout']}\nstderr:\n{run['stderr']}"
    assert "Summary: 2 groups" in run["stdout"]
    assert network_use(run) == [], "the demo opened a network socket"
    assert run["stderr"] == ""


@pytest.fixture(scope="module")
def beside_redis(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """20 demo runs in a row, one group each, while a redis-server listens on 6379."""
    tmp = tmp_path_factory.mktemp("beside-redis")
    args = ("--redis", "--runs", str(OFFLINE_RUNS), "--timeout", str(OFFLINE_RUN_TIMEOUT))
    return offline(tmp, *args, timeout=BESIDE_REDIS_LIMIT - 30)


@pytest.mark.timeout(BESIDE_REDIS_LIMIT)
def test_twenty_demo_runs_in_a_row_all_finish_and_none_hangs(
    beside_redis: dict[str, Any],
) -> None:
    runs = beside_redis["runs"]
    failed = [(n, r) for n, r in enumerate(runs, 1) if r["returncode"] != 0]
    assert not failed, "runs that hung or failed:\n" + "\n".join(
        f"run {n}: {r['returncode']} after {r['seconds']}s\n{r['stdout']}{r['stderr']}"
        for n, r in failed
    )
    assert len(runs) == OFFLINE_RUNS
    assert all("Summary: 1 groups" in r["stdout"] for r in runs)


@pytest.mark.timeout(BESIDE_REDIS_LIMIT)
def test_the_demo_never_connects_to_a_redis_listening_on_its_old_default_port(
    beside_redis: dict[str, Any],
) -> None:
    (first, second), after = beside_redis["baseline"], beside_redis["after"]
    # Between two readings only the first INFO counts: that is all the twenty runs may add.
    probe = second["total_commands_processed"] - first["total_commands_processed"]
    assert after["total_connections_received"] == second["total_connections_received"]
    assert after["total_commands_processed"] - second["total_commands_processed"] == probe
    assert [network_use(r) for r in beside_redis["runs"]] == [[]] * OFFLINE_RUNS
