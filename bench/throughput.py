"""Throughput of the worker against bare Celery no-op tasks, same broker and worker count.

    .venv/bin/python bench/throughput.py --events 2000 --concurrency 2

The README's command, kept: it runs the throughput section of bench/run.py once (bare Celery,
bare Celery with events and results, catalog.parsed, build results), each a pre-loaded queue
timed from the first message taken to the last one finished.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if sys.path[0] == str(REPO / "bench"):
    sys.path[0] = str(REPO)

from bench.run import main as run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    argv = ["--sections", "throughput", "--repeat", "1"]
    argv += ["--events", str(args.events), "--concurrency", str(args.concurrency)]
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
