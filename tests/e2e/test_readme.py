"""README's "Running the real thing", pasted into fresh shells, against real PostgreSQL and Redis.

The commands come out of README.md at run time and run as written. Only what must differ per
run is replaced: the database's name and the Redis database numbers (leased for this test).
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from domain import ImageGroupId, ImageGroupStatus
from persistence.db import make_engine
from persistence.uow import SqlUnitOfWork
from tests.e2e.pasted import Command, Shell, first_status, section_blocks
from tests.integration.stack import wait_for
from tests.pg import base_url, database_to_create
from tests.redis_db import lease_redis_db

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HEADING = "## Running the real thing"
GROUP = "tiny-cluster-v1"
#: The PostgreSQL server the README's commands name; the test runs on that one only.
README_SERVER = ("127.0.0.1", 5432, "postgres")
S = ImageGroupStatus


def localised(blocks: list[list[Command]], database: str, redis_url: str) -> list[list[Command]]:
    """The README's commands aimed at this test's databases; every replacement must apply."""
    replace = {
        "127.0.0.1:5432/imagegroups": f"127.0.0.1:5432/{database}",
        "-U postgres imagegroups": f"-U postgres {database}",
        "redis://127.0.0.1:6379/0": redis_url,
    }
    text = "\n".join(c.line for block in blocks for c in block)
    missing = [old for old in replace if old not in text]
    assert not missing, f"the README no longer names {missing}; update this test with it"
    return [[Command(_replace_all(c.line, replace)) for c in block] for block in blocks]


def _replace_all(line: str, replace: dict[str, str]) -> str:
    for old, new in replace.items():
        line = line.replace(old, new)
    return line


def fresh_env(home: Path) -> dict[str, str]:
    """What a new login shell has: no venv, no project settings."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}


def run_step(shell: Shell, command: Command) -> None:
    """Paste one command; a `status` its comment promises a status for is re-run until then."""
    promised = command.promised_statuses
    last: list[tuple[int, str]] = []

    def keeps_its_promise() -> bool:
        last[:] = [shell.run(command.line)]
        code, output = last[0]
        return code == 0 and (not promised or first_status(output) in promised)

    if command.code.startswith("imagegroups status") and promised:
        try:
            wait_for(keeps_its_promise, timeout=60, every=0.5, what=f"{promised}: {command.code}")
        except AssertionError as late:
            raise AssertionError(f"{late}; last output:\n{last[0][1]}") from None
        return
    assert keeps_its_promise(), f"{command.line}\nexit {last[0][0]}:\n{last[0][1]}"


def start_in_own_shell(
    prelude: list[Command], command: Command, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    """A second or third shell: the lines every shell starts with, then the long-running one."""
    script = "\n".join([*(c.line for c in prelude), f"exec {command.line}"])
    with log.open("wb") as sink:
        popen = subprocess.Popen(
            ["bash", "--noprofile", "--norc", "-c", script],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    wait_for(
        lambda: "ready." in log.read_text(errors="replace") or popen.poll() is not None,
        timeout=60,
        what=f"`{command.code}` to be ready",
    )
    assert popen.poll() is None, log.read_text(errors="replace")
    return popen


def stop(popen: subprocess.Popen[bytes]) -> None:
    popen.send_signal(signal.SIGINT)  # Ctrl-C, as the README says
    try:
        popen.wait(30)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait(5)


def is_install(command: Command) -> bool:
    return command.code.startswith("scripts/bootstrap.sh")


@pytest.fixture
def servers() -> Iterator[tuple[str, str, str]]:
    """A database name nobody has created yet (the README creates it), and a Redis database."""
    base = base_url()
    if (base.host, base.port, base.username) != README_SERVER:
        pytest.skip(f"the README's commands name PostgreSQL {README_SERVER}, tests use {base}")
    with database_to_create("readme") as (name, url), lease_redis_db() as redis_url:
        yield name, url, redis_url


def test_the_readme_walkthrough_runs_as_written_in_fresh_shells(
    tmp_path: Path, servers: tuple[str, str, str]
) -> None:
    name, url, redis_url = servers
    blocks = localised(section_blocks((REPO / "README.md").read_text(), HEADING), name, redis_url)
    [prelude] = [b for b in blocks if b[0].code == "source .venv/bin/activate"]
    [install] = [c for b in blocks for c in b if is_install(c)]
    # scripts/test.sh runs that line before any test; here it would need the network.
    assert (REPO / ".venv/bin/imagegroups").is_file(), f"run `{install.code}` first"
    env = fresh_env(tmp_path)
    with ExitStack() as running:
        shell = Shell(REPO, env, tmp_path / "shell-1.log")
        running.callback(shell.close)
        for number, command in enumerate(c for b in blocks for c in b if not is_install(c)):
            if command.keeps_running:
                log = tmp_path / f"background-{number}.log"
                running.callback(stop, start_in_own_shell(prelude, command, env, log))
            else:
                run_step(shell, command)
    assert_redeployed_settled_and_cleaned(url)


def assert_redeployed_settled_and_cleaned(url: str) -> None:
    engine = make_engine(url)
    try:
        with SqlUnitOfWork(engine) as uow:
            group = uow.groups.find_by_id(ImageGroupId(GROUP))
            history = uow.history.list_for_group(ImageGroupId(GROUP))
    finally:
        engine.dispose()
    moves = [(h.from_status, h.to_status) for h in history]
    assert group is not None
    assert (group.status, group.attempt) == (S.CLEANED, 2)
    assert (S.FAILED, S.DEPLOYING) in moves  # the redeploy
    assert moves[-1][0] in {S.PASSED, S.FAILED}  # where the flow ended before the cleanup
