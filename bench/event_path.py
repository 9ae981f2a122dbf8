"""Which of our files one build result's path runs through, from the queue entry to the follow-on.

    .venv/bin/python -m bench.event_path --database-url URL --broker-url redis://HOST/N [--json]

A Celery worker on a thread of this process (the solo pool: the task runs on the consumer's
thread), on the given PostgreSQL database and Redis, with the production settings otherwise.
One group's catalog and build result are handled first, untraced (they start the threads and
connections the path uses), and a second group's catalog; then every function call of every
thread is recorded from the moment that group's build result is published until its
follow-on (the deploy request) is marked sent; the jobs the worker runs on timers
(workers/runtime/periodic.py: the database probe, the sweeps) are left out, as they tick
whether or not an event passes. What is printed is each file of ours that
ran, with how many of our functions in it were called.

The database must be empty (it is migrated here); the Redis database is flushed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OURS = tuple(str(REPO / package) + os.sep for package in ("domain", "persistence", "workers"))


class Calls:
    """A profile function for every thread: counts our functions' calls while `on`."""

    def __init__(self) -> None:
        from workers.runtime.periodic import Every

        self.timers = Every
        self.on = False
        self.files: Counter[str] = Counter()
        self.functions: Counter[str] = Counter()

    def __call__(self, frame: FrameType, event: str, _arg: Any) -> None:
        if self.on and event == "call":
            if isinstance(threading.current_thread(), self.timers):
                return  # a timer's job (the database probe, sweeps): not on the event's path
            name = frame.f_code.co_filename
            if name.startswith(OURS):
                self.files[str(Path(name).relative_to(REPO))] += 1
                self.functions[f"{Path(name).relative_to(REPO)}:{frame.f_code.co_qualname}"] += 1


def _wait(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.01)


def measure(database_url: str, broker_url: str) -> Calls:
    """Our files (and functions) one build result runs through, each with its count of calls."""
    os.environ.update(DATABASE_URL=database_url, CELERY_BROKER_URL=broker_url)
    import redis
    from sqlalchemy import create_engine, text

    from workers import outbox
    from workers.celery import app
    from workers.messages import EVENTS_QUEUE
    from workers.settings import get_settings
    from workers.standin import demo_setup

    redis.Redis.from_url(broker_url).flushdb()
    setup = demo_setup.Setup(get_settings(), broker_url, None, fresh_database=True)
    demo_setup.prepare(setup)
    calls = Calls()
    threading.setprofile(calls)
    worker = demo_setup.EmbeddedWorker(app, "path", [EVENTS_QUEUE], "solo", 1)
    worker.start()
    engine = create_engine(database_url)

    def count(sql: str, group: str) -> int:
        with engine.connect() as conn:
            return int(conn.execute(text(sql), {"group": group}).scalar_one())

    def handled(job: str, group: str, *, trace: bool) -> None:
        outbox.send(app, outbox.catalog_parsed(job, group, ["compute"]))
        reserved = "SELECT count(*) FROM catalog_reservations WHERE image_group_id = :group"
        _wait(lambda: count(reserved, group) == 1, "the catalog")
        calls.on = trace
        outbox.send(app, outbox.stage_finished(job, "build-image", "succeeded"))
        sent = "SELECT count(*) FROM outbox WHERE image_group_id = :group AND sent_at IS NOT NULL"
        _wait(lambda: count(sent, group) == 1, "the deploy request to be sent")
        calls.on = False

    try:
        # One whole group first, untraced: every thread and connection the path uses is up.
        handled(str(uuid.uuid4()), f"warm-{uuid.uuid4().hex[:8]}", trace=False)
        handled(str(uuid.uuid4()), f"path-{uuid.uuid4().hex[:8]}", trace=True)
    finally:
        threading.setprofile(None)
        demo_setup.stop_workers([worker])
        engine.dispose()
    return calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--broker-url", required=True)
    parser.add_argument("--json", action="store_true", help="print {file: calls} as JSON")
    parser.add_argument("--functions", action="store_true", help="each function too, on stderr")
    args = parser.parse_args(argv)
    calls = measure(args.database_url, args.broker_url)
    files = dict(sorted(calls.files.items()))
    if args.functions:
        for function, n in sorted(calls.functions.items()):
            print(f"{n:6d}  {function}", file=sys.stderr)
    if args.json:
        print(json.dumps(files))
    else:
        for name, n in files.items():
            print(f"{n:6d}  {name}")
        print(f"{len(files)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
