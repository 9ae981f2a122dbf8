"""CPU per event of the product's own code, in one process, without Celery's worker around it.

    .venv/bin/python bench/cpu.py                 # 1000 groups; CPU and wall per event
    .venv/bin/python bench/cpu.py --profile       # and where the build handler's CPU goes

Each step runs for every group in turn on a fresh, migrated PostgreSQL database and a leased
Redis database: the catalog handler, the build-result handler (one transaction each), then the
follow-on publish (`send_task`, with its sent event): half of them one by one, as the relay sends
after a failed batch, half a batch (one Redis round trip) per event, as a worker's delivery thread
sends them. CPU is this thread's (`time.thread_time`),
so waiting on PostgreSQL or Redis does not count; a profile uses the same clock.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: bench/ and the product are importable
    sys.path.insert(0, str(REPO))

from tests.pg import fresh_database  # noqa: E402
from tests.redis_db import lease_redis_db  # noqa: E402


def _per_event(label: str, n: int, step: Callable[[], None]) -> None:
    cpu, wall = time.thread_time(), time.perf_counter()
    step()
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    print(f"{label:<34} CPU {cpu / n * 1000:5.2f} ms   wall {wall / n * 1000:5.2f} ms per event")


def measure(n: int, profile: bool) -> None:
    from workers import outbox
    from workers.celery import app
    from workers.edge.accept import CatalogParsedEvent, StageFinishedEvent, parse
    from workers.handlers import Result, handle_catalog_parsed, handle_stage_finished
    from workers.outbox import CeleryPublisher
    from workers.runtime import root

    root.install(CeleryPublisher(app))  # follow-ons are sent on the event app, as a worker's
    rt = root.runtime()
    jobs = [str(uuid.uuid4()) for _ in range(n)]
    catalogs = [
        parse(
            CatalogParsedEvent,
            (),
            {"event": outbox.catalog_parsed(j, f"cpu-{j[:13]}", ["compute", "login"])},
        ).to_command()
        for j in jobs
    ]
    builds = [
        parse(
            StageFinishedEvent,
            (),
            {"event": outbox.stage_finished(j, "build-image", "succeeded")},
        ).to_command()
        for j in jobs
    ]
    results: list[Result] = []

    def catalog() -> None:
        for command in catalogs:
            handle_catalog_parsed(command, deps=rt.deps)

    def build() -> None:
        results.extend(handle_stage_finished(command, deps=rt.deps) for command in builds)

    publisher: CeleryPublisher = rt.relay.publisher  # type: ignore[assignment]
    half = n // 2

    def publish() -> None:  # as the relay sends them again after a failed batch
        for result in results[:half]:
            for message in result.messages:
                publisher.publish(message)

    def publish_batch() -> None:  # as the worker's delivery thread sends one event's follow-ons
        for result in results[half:]:
            publisher.publish_batch(result.messages)

    try:
        _per_event("catalog.parsed handler", n, catalog)
        if profile:
            profiler = cProfile.Profile(time.thread_time)
            profiler.runcall(build)
            stats = pstats.Stats(profiler)
            stats.sort_stats("cumulative").print_stats(r"(persistence|domain|workers)/", 25)
        else:
            _per_event("build result handler", n, build)
        _per_event("follow-on publish, one by one", half, publish)
        _per_event("follow-on publish, a batch each", n - half, publish_batch)
    finally:
        rt.engine.dispose()  # the database is dropped next


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--groups", type=int, default=1000, help="groups per step (1000)")
    parser.add_argument("--profile", action="store_true", help="profile the build handler")
    args = parser.parse_args()
    with fresh_database("cpu") as url, lease_redis_db() as broker:
        env = {**os.environ, "DATABASE_URL": url}
        imagegroups = Path(sys.executable).parent / "imagegroups"
        subprocess.run(
            [str(imagegroups), "db", "upgrade"], env=env, check=True, capture_output=True
        )
        os.environ.update(DATABASE_URL=url, CELERY_BROKER_URL=broker)
        measure(args.groups, args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
