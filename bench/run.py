"""Every performance anchor in one run, against bare Celery on the same broker and worker count.

    .venv/bin/python bench/run.py                      # all sections, 10-20 minutes
    .venv/bin/python bench/run.py --quick              # a short version of each
    .venv/bin/python bench/run.py --sections throughput,reaction --json run.json
    .venv/bin/python bench/run.py --rev HEAD           # the committed code, not the working tree
    .venv/bin/python bench/run.py --sections anchors --result-backend unset
        # ours beside the Celery ceiling (no-op + task events), the naive peer
        # (bench/naive_app.py) and PostgreSQL's limit for our own SQL (bench/pg_limit.py)

Needs PostgreSQL on 127.0.0.1:5432 (trust, user postgres; IMAGEGROUPS_TEST_PG overrides) and
Redis on 127.0.0.1:6379; it creates and drops a database per measurement and leases a Redis
database of its own (tests/redis_db.py), so it can run while the tests do. The worker under
test is started as users start it: `celery -A workers worker -l WARNING --concurrency N`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if sys.path[0] == str(REPO / "bench"):
    sys.path[0] = str(REPO)  # run as a script: import the bench as a package, never shadowed

from bench import anchors, report  # noqa: E402
from bench.comparison import comparison  # noqa: E402
from bench.git_export import exported  # noqa: E402
from bench.large import large  # noqa: E402
from bench.machine import machine  # noqa: E402
from bench.memory import memory  # noqa: E402
from bench.reaction import reaction  # noqa: E402
from bench.scaling import scaling  # noqa: E402
from bench.spy import markdown, profile  # noqa: E402
from bench.stack import Stack  # noqa: E402
from tests.redis_db import lease_redis_db  # noqa: E402

SECTIONS = ["throughput", "anchors", "reaction", "scaling", "large", "memory", "profile"]
#: (full, --quick) defaults
DEFAULTS = {
    "events": (3000, 300),
    "repeat": (3, 1),
    "seconds": (30.0, 5.0),
    "large_rows": (1_000_000, 20_000),
    "memory_events": (10_000, 1_000),
    "profile_seconds": (20.0, 5.0),
    "calm": (120.0, 10.0),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="a short version of every section")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated, in order")
    p.add_argument("--events", type=int, help="events per drain (3000; quick 300)")
    p.add_argument("--concurrency", type=int, default=2, help="pool processes (2)")
    p.add_argument("--repeat", type=int, help="runs of each anchor, interleaved (3; quick 1)")
    p.add_argument("--rate", type=float, default=20.0, help="reaction: events per second")
    p.add_argument("--seconds", type=float, help="reaction: for how long (30; quick 5)")
    p.add_argument("--large-rows", type=int, help="rows per pre-filled table (1,000,000)")
    p.add_argument("--memory-events", type=int, help="events handled for the memory figure")
    p.add_argument("--profile-seconds", type=float, help="py-spy recording length (20)")
    p.add_argument("--profile-md", type=Path, help="where to write the profile (bench/PROFILE.md)")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    p.add_argument("--code", type=Path, default=REPO, help="the checkout whose worker runs")
    p.add_argument("--rev", help="run this git revision of the repository instead (git archive)")
    p.add_argument(
        "--result-backend",
        default="broker",
        help="CELERY_RESULT_BACKEND for the worker: 'broker' (its Redis database, the default, as "
        "README's shells set it), 'unset', or a URL",
    )
    p.add_argument("--set", action="append", default=[], metavar="VAR=VALUE", help="worker env")
    p.add_argument(
        "--calm",
        type=float,
        help="before each measurement, wait at most this long (120 s; quick 10) "
        "for other loads on the machine to end; 0: never wait",
    )
    p.add_argument("--keep-logs", action="store_true", help="keep the workers' logs")
    args = p.parse_args(argv)
    for name, (full, quick) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.profile_md is None and not args.quick:
        args.profile_md = REPO / "bench" / "PROFILE.md"
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        p.error(f"unknown sections {unknown}; choose from {SECTIONS}")
    return args


@contextmanager
def checkout(code: Path, rev: str | None) -> Iterator[tuple[Path, str]]:
    """The code to run and how to name it: a directory as it is, or a git revision exported."""
    if rev is None:
        yield code, _describe(code)
        return
    sha = _git(REPO, "rev-parse", "--short", rev)
    with exported(rev, "bench-code-") as tree:
        yield tree, f"git {rev} ({sha}), exported"


def _git(where: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "?"


def _describe(code: Path) -> str:
    sha = _git(code, "rev-parse", "--short", "HEAD")
    paths = ["workers", "domain", "persistence", "celeryconfig.py"]
    dirty = _git(code, "status", "--porcelain", "--", *paths)
    return f"{code} (HEAD {sha}{', with uncommitted changes' if dirty else ''})"


def _say(message: str) -> None:
    print(f"bench: {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def run_section(name: str, stack: Stack, args: argparse.Namespace, out: report.Results) -> None:
    n, c = args.events, args.concurrency
    if name == "throughput":
        out.throughput = anchors.throughput(stack, n, c, args.repeat)
    elif name == "anchors":
        out.anchors = comparison(stack, n, c, args.repeat)
    elif name == "reaction":
        out.reaction = reaction(stack, args.rate, args.seconds, c)
    elif name == "scaling":
        out.scaling = scaling(stack, n)
    elif name == "large":
        out.large = large(stack, n, args.large_rows, c, args.repeat)
    elif name == "memory":
        out.memory = memory(stack, args.memory_events, c)
    elif name == "profile":
        out.profile = profile(stack, args.profile_seconds, c)
        if args.profile_md is not None:
            args.profile_md.write_text(markdown(out.profile, out.header["command"]) + "\n")
            _say(f"wrote {args.profile_md}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    settings = dict(item.split("=", 1) for item in args.set)
    with ExitStack() as context:
        code, described = context.enter_context(checkout(args.code.resolve(), args.rev))
        logs = Path(tempfile.mkdtemp(prefix="bench-logs-"))
        broker = context.enter_context(lease_redis_db())
        stack = Stack(code, broker, logs, args.result_backend, settings, args.calm)
        context.callback(stack.close)
        shown = ["bench/run.py", *(sys.argv[1:] if argv is None else argv)]
        out = report.Results(
            header={
                "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
                "code": described,
                "cores": os.cpu_count(),
                "machine": machine(stack.redis),
                "command": ".venv/bin/python " + shlex.join(shown),
                "broker": broker,
                "result_backend": stack.backend,
                "settings": settings,
            }
        )
        try:
            for name in args.sections:
                _say(f"{name} ...")
                run_section(name, stack, args, out)
        except BaseException:
            _say(f"failed; the workers' logs are in {logs}")
            raise
        out.header["seconds"] = time.time() - started
        out.header["waited"] = stack.waited
    print(report.text(out))
    if args.json:
        args.json.write_text(json.dumps(report.as_json(out), indent=2) + "\n")
        _say(f"wrote {args.json}")
    if not args.keep_logs:
        for log in logs.glob("*"):
            log.unlink()
        logs.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
