"""Broker memory: Redis `used_memory` after the worker handled a number of events, with the
project's celeryconfig as it is, extrapolated to 100,000 events from two measured points.

It runs on a private `redis-server` (no persistence) when one is installed, so nothing else
moves `used_memory`; otherwise on the bench's own Redis database of the shared server, where
the per-key figures still hold but `used_memory` includes everyone else's changes.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis

from bench import events
from bench.drain import wait_idle
from bench.stack import BIN, OURS, Stack, Worker

TARGET = 100_000
FOLLOW_ON = "pipeline.deploy"
_CONFIG = (
    "import json, celeryconfig as c; print(json.dumps({k: getattr(c, k, None) for k in "
    "['result_backend', 'result_extended', 'result_expires', 'worker_send_task_events', "
    "'task_send_sent_event', 'task_ignore_result']}, default=str))"
)


@dataclass
class Point:
    events: int
    used_memory: int
    keys: dict[str, tuple[int, int]]  # kind -> (keys, bytes by MEMORY USAGE)


@dataclass
class Memory:
    server: str
    result_backend_env: str
    config: dict[str, object]
    baseline: int
    points: list[Point] = field(default_factory=list)
    follow_on_bytes: int = 0  # the deploy requests of the last round, before the pipeline took them

    @property
    def per_event(self) -> float:
        (a, b) = (self.points[0], self.points[-1])
        if b.events == a.events:
            return (b.used_memory - self.baseline) / max(1, b.events)
        return (b.used_memory - a.used_memory) / (b.events - a.events)

    @property
    def at_target(self) -> float:
        last = self.points[-1]
        return last.used_memory + self.per_event * (TARGET - last.events)


@contextmanager
def private_redis() -> Iterator[str | None]:
    exe = shutil.which("redis-server")
    if exe is None:
        yield None
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def key_usage(client: redis.Redis) -> dict[str, tuple[int, int]]:
    """Keys and bytes per kind: stored results, follow-on queues, everything else."""
    found: dict[str, list[int]] = {}
    for key in client.scan_iter(count=1000):
        name = key.decode(errors="replace")
        kind = "results" if name.startswith("celery-task-meta-") else "other"
        kind = "follow-on queues" if name.startswith("pipeline.") else kind
        entry = found.setdefault(kind, [0, 0])
        entry[0] += 1
        entry[1] += int(client.memory_usage(key, samples=0) or 0)
    return {kind: (n, size) for kind, (n, size) in found.items()}


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def celery_config(stack: Stack, url: str) -> dict[str, object]:
    """What the worker's celeryconfig resolves to in the worker's environment."""
    done = subprocess.run(
        [str(BIN / "python"), "-c", _CONFIG],
        cwd=stack.code,
        env=stack.env(url),
        capture_output=True,
        text=True,
        check=True,
    )
    config: dict[str, object] = json.loads(done.stdout)
    return config


def _round(stack: Stack, groups: list[events.Group], workers: list[Worker]) -> int:
    """Catalogs, then build results, each queue drained; returns the follow-ons' bytes."""
    for make in (events.catalog_parsed, lambda g: events.stage_finished(g, "build-image")):
        events.preload(stack.client, (make(g) for g in groups))
        wait_idle(stack, events.EVENTS_QUEUE, workers, timeout=1800)
    size = int(stack.redis.memory_usage(FOLLOW_ON, samples=0) or 0)
    stack.redis.delete(FOLLOW_ON)  # the pipeline takes its requests
    return size


def memory(stack: Stack, total_events: int, concurrency: int = 2) -> Memory:
    with private_redis() as private:
        own = stack
        if private is not None:
            own = Stack(stack.code, private, stack.logs, stack.result_backend, stack.settings)
        try:
            return _measure(
                own,
                "private redis-server" if private else "shared server",
                total_events,
                concurrency,
            )
        finally:
            if own is not stack:
                own.close()


def _measure(stack: Stack, server: str, total_events: int, concurrency: int) -> Memory:
    half = max(1, total_events // 4)  # groups per round; two events per group
    with stack.database() as url, stack.workers(OURS, concurrency, stack.env(url)) as workers:
        found = Memory(server, stack.backend, celery_config(stack, url), used_memory(stack.redis))
        for done in (1, 2):
            found.follow_on_bytes = _round(stack, events.groups(half, f"mem{done}"), workers)
            time.sleep(0.5)  # let the last results and acknowledgements land
            found.points.append(
                Point(2 * half * done, used_memory(stack.redis), key_usage(stack.redis))
            )
    return found
