"""How long `imagegroups` takes to answer, as an operator runs it: each command started N times
as a subprocess against a throwaway PostgreSQL database, best and median wall time reported.

    .venv/bin/python bench/cli_latency.py                  # the working tree, 15 runs each
    .venv/bin/python bench/cli_latency.py --rev HEAD       # and HEAD's code, runs interleaved
    .venv/bin/python bench/cli_latency.py --runs 30 --json latency.json

Needs PostgreSQL on 127.0.0.1:5432 (trust, user postgres; IMAGEGROUPS_TEST_PG overrides); it
creates and drops a database per code version (each migrated and seeded by its own code). The
broker URL points at a closed port: no read command may need the broker, and one that tried
would show here as a slow or failed run. With `--rev`, each run of the working tree is followed
by one of the other code, so a machine that gets busier slows both alike.
Goals (issue 15): `--help` within 0.3 s, a read command on PostgreSQL within 0.6 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if sys.path[0] == str(REPO / "bench"):
    sys.path[0] = str(REPO)  # run as a script: import the bench as a package, never shadowed

from bench.git_export import exported  # noqa: E402
from tests.pg import fresh_database  # noqa: E402

#: What the console script runs, started so that the code of `cwd` is the one imported.
LAUNCH = "import sys; from workers.cli.main import main; sys.exit(main())"
CLOSED_BROKER = "redis://127.0.0.1:1/0"
GROUP = "bench-latency"
#: One FAILED group (a deploy that failed), through the handlers of the code being measured.
SEED = f"""
import sys, uuid
from datetime import UTC, datetime
from persistence.db import make_engine
from persistence.uow import SqlUnitOfWork
from workers import handlers
from workers import outbox
from workers.outbox import FollowOns
from workers.edge.accept import CatalogParsedEvent, StageFinishedEvent
engine = make_engine(sys.argv[1])
deps = handlers.Deps(lambda: SqlUnitOfWork(engine, FollowOns()), lambda: datetime.now(UTC),
                     lambda: str(uuid.uuid4()), True)
job = str(uuid.uuid4())
event = outbox.catalog_parsed(job, {GROUP!r}, ["login", "compute"])
handlers.handle_catalog_parsed(CatalogParsedEvent.model_validate(event).to_command(), deps=deps)
for stage, outcome in [("build-image", "succeeded"), ("deploy", "failed")]:
    event = outbox.stage_finished(job, stage, outcome, error_code="E_BENCH")
    handlers.handle_stage_finished(StageFinishedEvent.model_validate(event).to_command(), deps=deps)
engine.dispose()
"""
COMMANDS: dict[str, list[str]] = {
    "--help": ["--help"],
    "status": ["status", GROUP],
    "status --json": ["status", GROUP, "--json"],
    "list": ["list"],
    "list --json": ["list", "--json"],
    "history": ["history", GROUP],
    "dead-letters list": ["dead-letters", "list"],
}
GOALS = {"--help": 0.3}
READ_GOAL = 0.6
Figures = dict[str, dict[str, dict[str, float]]]  # code -> command -> best_s / median_s


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runs", type=int, default=15, help="runs of each command, per code")
    p.add_argument("--rev", help="also measure this git revision (git archive), interleaved")
    p.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
    return p.parse_args(argv)


def environment(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGROUPS_")}
    env.pop("PYTHONPATH", None)
    return env | {"DATABASE_URL": database_url, "CELERY_BROKER_URL": CLOSED_BROKER}


def prepare(code: Path, env: dict[str, str]) -> None:
    """Migrate and seed with this code, and make sure it is this code that runs."""
    where = subprocess.run(
        [sys.executable, "-c", "import workers; print(workers.__file__)"],
        cwd=code,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    if not Path(where.stdout.strip()).is_relative_to(code):
        raise SystemExit(f"{code}: imports {where.stdout.strip()} instead of its own code")
    for argv in ([sys.executable, "-c", LAUNCH, "db", "upgrade"], [sys.executable, "-c", SEED]):
        url = [env["DATABASE_URL"]] if argv[-1] == SEED else []
        done = subprocess.run([*argv, *url], cwd=code, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{code}: preparing the database failed: {done.stderr.strip()}")


def timed(code: Path, argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", LAUNCH, *argv], cwd=code, env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{code}: imagegroups {' '.join(argv)} failed: {done.stderr.strip()}")
    return elapsed


def measure(codes: dict[str, tuple[Path, dict[str, str]]], runs: int) -> Figures:
    figures: Figures = {name: {} for name in codes}
    for command, argv in COMMANDS.items():
        times: dict[str, list[float]] = {name: [] for name in codes}
        for code, env in codes.values():
            timed(code, argv, env)  # warm the page cache and the .pyc files; not counted
        for _ in range(runs):
            for name, (code, env) in codes.items():
                times[name].append(timed(code, argv, env))
        for name, spent in times.items():
            figures[name][command] = {"best_s": min(spent), "median_s": statistics.median(spent)}
    return figures


def print_report(figures: Figures, runs: int) -> None:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"imagegroups wall time per command, {runs} runs each (1-min load {load:.2f})")
    for name, commands in figures.items():
        print(f"\n{name}\n{'COMMAND':<20} {'BEST':>8} {'MEDIAN':>8} {'GOAL':>6}")
        for command, figure in commands.items():
            goal = GOALS.get(command, READ_GOAL)
            mark = "" if figure["median_s"] <= goal else "  over goal"
            print(
                f"{command:<20} {figure['best_s']:>7.3f}s {figure['median_s']:>7.3f}s "
                f"{goal:>5.1f}s{mark}"
            )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with ExitStack() as stack:
        trees = {"working tree": REPO}
        if args.rev:
            trees[args.rev] = stack.enter_context(exported(args.rev, "bench-cli-"))
        codes = {}
        for name, code in trees.items():
            env = environment(stack.enter_context(fresh_database("cli_latency")))
            prepare(code, env)
            codes[name] = (code, env)
        figures = measure(codes, args.runs)
    print_report(figures, args.runs)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
