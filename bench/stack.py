"""Where a measurement runs: the code under test, a Redis database of its own, throwaway
PostgreSQL databases, and worker processes started exactly as users start them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis
from celery import Celery

from bench.meter import wait_calm
from tests.pg import fresh_database

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
#: The worker under test, as README and docs/contract.md start it (log level aside).
OURS = "workers"
#: The bare Celery baseline (bench/noop_app.py), started the same way.
NOOP = "bench.noop_app"
#: The naive peer (bench/naive_app.py): the mission without the product's machinery.
NAIVE = "bench.naive_app"
#: Variables the bench sets itself; inherited values would point the worker elsewhere.
_OWN = ("DATABASE_URL", "CELERY_", "IMAGEGROUPS_", "BENCH_", "PYTHONPATH")


@dataclass
class Worker:
    """One `celery worker` process and its log file."""

    popen: subprocess.Popen[bytes]
    log: Path

    def pids(self) -> list[int]:
        """The main process and its pool processes."""
        pid = self.popen.pid
        children: list[int] = []
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                children += [int(c) for c in (task / "children").read_text().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
        return [pid, *children]

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)  # warm shutdown, as Ctrl-C
            try:
                self.popen.wait(60)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)


@dataclass
class Stack:
    """A broker (Redis database) and the checkout whose worker is measured."""

    code: Path
    broker: str
    logs: Path
    #: CELERY_RESULT_BACKEND: "broker" (the broker's own database, as README's shells set
    #: it), "unset" (not set at all), or a URL as it is.
    result_backend: str = "broker"
    settings: dict[str, str] = field(default_factory=dict)
    calm_timeout: float = 120.0  # at most this long waiting for a quiet machine, per measurement

    def __post_init__(self) -> None:
        self.redis = redis.Redis.from_url(self.broker)
        self.client = Celery("bench-client", broker=self.broker)
        self.client.conf.update(task_serializer="json", accept_content=["json"])
        self._started = 0
        self.waited = 0.0  # seconds spent waiting for a quiet machine

    def calm(self) -> None:
        """Before a measurement: wait (a while at most) for other loads on the machine to end."""
        self.waited += wait_calm(timeout=self.calm_timeout)

    @property
    def backend(self) -> str:
        """CELERY_RESULT_BACKEND as the worker gets it ("<unset>" when it is not set)."""
        if self.result_backend == "unset":
            return "<unset>"
        return self.broker if self.result_backend == "broker" else self.result_backend

    def env(self, database_url: str | None = None, **extra: str) -> dict[str, str]:
        """The environment of docs/contract.md, nothing inherited that could redirect it."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN)}
        env.update(
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            PYTHONPATH=str(self.code),
            CELERY_BROKER_URL=self.broker,
        )
        if self.result_backend != "unset":
            env["CELERY_RESULT_BACKEND"] = self.backend
        if database_url is not None:
            env["DATABASE_URL"] = database_url
        env.update(self.settings)
        env.update(extra)
        return env

    @contextmanager
    def database(self) -> Iterator[str]:
        """A fresh PostgreSQL database migrated to head by `imagegroups db upgrade`."""
        with fresh_database("bench") as url:
            subprocess.run(
                [str(BIN / "imagegroups"), "db", "upgrade"],
                cwd=self.code,
                env=self.env(url),
                check=True,
                capture_output=True,
            )
            yield url

    def start(self, app: str, concurrency: int, env: dict[str, str], name: str = "") -> Worker:
        """`celery -A app worker -l WARNING --concurrency N [-n name@%h]`."""
        argv = [str(BIN / "celery"), "-A", app, "worker", "-l", "WARNING"]
        argv += ["--concurrency", str(concurrency)]
        if name:
            argv += ["-n", f"{name}@%h"]
        self._started += 1
        log = self.logs / f"worker-{self._started}-{name or 'celery'}.log"
        own = app.startswith("bench.")  # the bench's own apps run from this checkout
        cwd = REPO if own else self.code
        if own:
            env = {**env, "PYTHONPATH": str(REPO)}
        with log.open("wb") as sink:
            popen = subprocess.Popen(argv, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT)
        return Worker(popen, log)

    @contextmanager
    def workers(
        self, app: str, concurrency: int, env: dict[str, str], count: int = 1
    ) -> Iterator[list[Worker]]:
        """`count` workers on the same queue, each answering a ping before this yields."""
        names = [f"w{i + 1}" for i in range(count)] if count > 1 else [""]
        started = [self.start(app, concurrency, env, name) for name in names]
        try:
            self.wait_ready(started)
            yield started
        finally:
            for worker in started:
                worker.stop()

    def wait_ready(self, workers: list[Worker], timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for worker in workers:
                if not worker.alive():
                    raise RuntimeError(f"worker exited at start:\n{worker.tail()}")
            replies = self.client.control.ping(timeout=0.5)
            if len(replies) >= len(workers):
                return
        raise RuntimeError(f"workers not ready after {timeout}s:\n{workers[0].tail()}")

    def close(self) -> None:
        self.redis.close()
        self.client.close()
