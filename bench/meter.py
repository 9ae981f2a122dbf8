"""CPU used during a measurement, per party, in cores (CPU seconds per wall second), from /proc.

worker: the worker processes and their pool processes (consumer: the worker processes alone,
each one thread fetching, dispatching and acknowledging messages); postgres: the backends of the
measured database plus PostgreSQL's own background processes; redis: the whole Redis server
(`INFO cpu`); bench: this process and the tools it ran meanwhile (py-spy); other: whatever
else the machine did meanwhile (other test runs, say). A large `other` means the figure was
disturbed.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis
from sqlalchemy import Engine, create_engine, text

from tests.pg import base_url

TICK = float(os.sysconf("SC_CLK_TCK"))
_BACKENDS = text(
    "SELECT pid FROM pg_stat_activity WHERE (datname = :d OR datname IS NULL) "
    "AND pid <> pg_backend_pid()"
)


@dataclass
class Cpu:
    worker: float = 0.0
    consumer: float = 0.0
    postgres: float = 0.0
    redis: float = 0.0
    bench: float = 0.0
    machine: float = 0.0
    cores: int = os.cpu_count() or 1

    @property
    def other(self) -> float:
        return max(0.0, self.machine - self.worker - self.postgres - self.redis - self.bench)


def process_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads), 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle (all cores) since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / TICK


def children_seconds() -> float:
    """CPU of this process's children that ended and were waited for (a py-spy run)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def wait_calm(cores: float = 0.3, timeout: float = 120.0) -> float:
    """Wait until the machine used less than `cores` over one second (our own workers idle
    meanwhile), at most `timeout` seconds; returns how long it waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        before = machine_busy_seconds()
        time.sleep(1.0)
        if machine_busy_seconds() - before < cores:
            break
    return time.monotonic() - start


def redis_seconds(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def postgres_pids(engine: Engine, database: str) -> list[int]:
    with engine.connect() as conn:
        return [int(pid) for pid in conn.execute(_BACKENDS, {"d": database}).scalars()]


class Meter:
    """Snapshot at start(), difference at stop(); pids are looked up at both ends."""

    def __init__(
        self,
        worker_pids: Callable[[], list[int]],
        client: redis.Redis,
        database: str | None,
        consumer_pids: Callable[[], list[int]] = list,
    ) -> None:
        self.worker_pids = worker_pids
        self.consumer_pids = consumer_pids
        self.client = client
        self.database = database
        self._start: dict[str, float] = {}
        self._procs: dict[int, float] = {}
        self._wall = 0.0
        self._engine = create_engine(base_url(), pool_size=1) if database else None

    def _pg_pids(self) -> list[int]:
        if self._engine is None or self.database is None:
            return []
        return postgres_pids(self._engine, self.database)

    def start(self) -> None:
        self._wall = time.perf_counter()
        self._procs = {p: process_seconds(p) for p in self.worker_pids() + self._pg_pids()}
        self._start = {
            "redis": redis_seconds(self.client),
            "bench": time.process_time() + children_seconds(),
            "machine": machine_busy_seconds(),
        }

    def _delta(self, pids: list[int]) -> float:
        return sum(process_seconds(p) - self._procs.get(p, 0.0) for p in set(pids))

    def stop(self) -> Cpu:
        wall = max(time.perf_counter() - self._wall, 1e-9)
        worker = self._delta(self.worker_pids())
        consumer = self._delta(self.consumer_pids())
        postgres = self._delta(self._pg_pids())
        if self._engine is not None:
            self._engine.dispose()
        return Cpu(
            worker=worker / wall,
            consumer=consumer / wall,
            postgres=postgres / wall,
            redis=(redis_seconds(self.client) - self._start["redis"]) / wall,
            bench=(time.process_time() + children_seconds() - self._start["bench"]) / wall,
            machine=(machine_busy_seconds() - self._start["machine"]) / wall,
        )
