"""Long-running commands: the stand-in pipeline (`simulate`) and the one-process `demo`."""

from __future__ import annotations

import argparse
import importlib

from workers.cli.output import CommandError

DEMO_MODULE = "workers.standin.demo"


def simulate(args: argparse.Namespace) -> int:
    from workers.standin.simulator import run_worker

    run_worker(
        fail_rate=args.fail_rate, delay=args.delay, seed=args.seed, concurrency=args.concurrency
    )
    return 0


def demo(args: argparse.Namespace) -> int:
    # Imported by name when asked for: the demo brings its own server-free wiring, which
    # no other command should load.
    try:
        module = importlib.import_module(DEMO_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != DEMO_MODULE:
            raise
        raise CommandError(f"the demo is not available in this install ({exc})") from None
    result = module.main(groups=args.groups)
    return result if isinstance(result, int) else 0
