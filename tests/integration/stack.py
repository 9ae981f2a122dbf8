"""A real stack for integration tests: PostgreSQL database, Redis db, worker subprocesses."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis
from celery import Celery

from domain import ImageGroup, ImageGroupId
from persistence.db import make_engine
from persistence.uow import SqlUnitOfWork, StoreUnitOfWork
from tests.pg import fresh_database
from tests.redis_db import lease_redis_db
from workers.outbox import FollowOns

REPO = Path(__file__).resolve().parents[2]
# The commands docker-compose.yml runs; tests run them verbatim (see test_compose.py).
WORKER = ["celery", "-A", "workers", "worker", "-l", "INFO"]
WORKER_COMMAND = [*WORKER, "--concurrency", "2"]
SIMULATOR_COMMAND = ["imagegroups", "simulate"]
FLOWER_COMMAND = ["celery", "-A", "workers", "flower"]
MIGRATE_COMMAND = ["imagegroups", "db", "upgrade"]
HEALTH_COMMAND = ["imagegroups", "health", "--json"]
T = TypeVar("T")


def wait_for(predicate: Callable[[], T], *, timeout: float, what: str, every: float = 0.05) -> T:
    """Poll until `predicate` returns something truthy; fail the test with `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


@dataclass
class Process:
    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def children(self) -> list[int]:
        """The pool processes of a worker (direct children of its main process)."""
        try:
            found = Path(f"/proc/{self.popen.pid}/task/{self.popen.pid}/children").read_text()
        except FileNotFoundError:
            return []
        return [int(child) for child in found.split()]

    def kill_all(self) -> None:
        """kill -9 of the main process and its children at once, as a host crash would."""
        for pid in [self.popen.pid, *self.children()]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            self.wait_or_kill(timeout)

    def wait_or_kill(self, timeout: float = 20) -> None:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)


@dataclass
class Stack:
    database_url: str
    redis_url: str
    tmp: Path
    settings: dict[str, str] = field(default_factory=dict)
    processes: list[Process] = field(default_factory=list)
    broker: str | None = None  # another broker (RabbitMQ); Redis still holds the results

    def __post_init__(self) -> None:
        self.broker_url = self.broker or self.redis_url
        self.redis = redis.Redis.from_url(self.redis_url)
        self.engine = make_engine(self.database_url)
        self.client = Celery("test-client", broker=self.broker_url, backend=self.result_url)
        self.client.conf.update(
            task_serializer="json", accept_content=["json"], result_accept_content=["json"]
        )

    @property
    def result_url(self) -> str:
        # The same database: result keys never collide with queue lists, and no stack's
        # results land in another stack's broker database.
        return self.redis_url

    def env(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGROUPS_")}
        env.update(
            DATABASE_URL=self.database_url,
            CELERY_BROKER_URL=self.broker_url,
            CELERY_RESULT_BACKEND=self.result_url,
            IMAGEGROUPS_RETRY_BACKOFF_BASE="0.05",
            IMAGEGROUPS_RETRY_BACKOFF_MAX="0.5",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.settings)
        env.update(overrides)
        return env

    def spawn(self, argv: list[str], name: str, **env: str) -> Process:
        log = self.tmp / f"{name}.log"
        with log.open("wb") as sink:
            popen = subprocess.Popen(
                argv, cwd=REPO, env=self.env(**env), stdout=sink, stderr=subprocess.STDOUT
            )
        process = Process(popen, log)
        self.processes.append(process)
        return process

    def start_worker(self, *args: str, name: str = "worker", **env: str) -> Process:
        process = self.spawn([*WORKER, *args] if args else WORKER_COMMAND, name, **env)
        wait_for(
            lambda: "ready." in process.output() or process.popen.poll() is not None,
            timeout=30,
            what=f"{name} to be ready",
        )
        assert process.popen.poll() is None, process.output()
        return process

    def start_simulator(self, *args: str) -> Process:
        process = self.spawn([*SIMULATOR_COMMAND, *args], "simulator")
        wait_for(lambda: "ready." in process.output(), timeout=30, what="simulator to be ready")
        return process

    def run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            argv,
            cwd=REPO,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check:
            assert done.returncode == 0, done.stderr
        return done

    def run_cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(["imagegroups", *args], check=check)

    def uow(self) -> StoreUnitOfWork:
        return SqlUnitOfWork(self.engine, FollowOns())

    def group(self, group_id: str) -> ImageGroup | None:
        with self.uow() as uow:
            return uow.groups.find_by_id(ImageGroupId(group_id))

    def query(self, read: Callable[[StoreUnitOfWork], T]) -> T:
        with self.uow() as uow:
            return read(uow)

    def close(self) -> None:
        # Every process is told at once, then waited for, so their warm shutdowns overlap.
        running = [p for p in self.processes if p.popen.poll() is None]
        for process in running:
            process.popen.send_signal(signal.SIGTERM)
        for process in running:
            process.wait_or_kill()
        self.engine.dispose()
        self.redis.close()


@contextmanager
def stack(tmp: Path, prefix: str, broker: str | None = None, **settings: str) -> Iterator[Stack]:
    # Each stack gets its own Redis database, so workers of one test never take another's
    # messages, even when two test sessions run at once.
    with (
        fresh_database(prefix) as url,
        lease_redis_db() as redis_url,
        stack_on(tmp, url, redis_url, broker=broker, **settings) as running,
    ):
        yield running


@contextmanager
def stack_on(
    tmp: Path, database_url: str, redis_url: str, broker: str | None = None, **settings: str
) -> Iterator[Stack]:
    """A stack on servers the caller provides (a private Redis or PostgreSQL, say)."""
    running = Stack(database_url, redis_url, tmp, settings, broker=broker)
    try:
        running.run(MIGRATE_COMMAND)
        yield running
    finally:
        running.close()


def redis_messages(client: redis.Redis, queue: str) -> list[dict[str, Any]]:
    """The kombu messages waiting in a Redis list (a queue), oldest first."""
    import json

    raw = client.lrange(queue, 0, -1)
    return [json.loads(item) for item in reversed(raw)]
