"""Timing a pre-loaded queue's drain: from the first message taken to the last one finished
(the Redis list empty and nothing left unacknowledged), with the CPU each party used."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bench.meter import Cpu, Meter
from bench.stack import Stack, Worker

POLL = 0.005  # seconds between looks at the queue; 0.1% of a 5-second drain
UNACKED = "unacked"  # kombu's hash of delivered, unacknowledged messages


@dataclass
class Drain:
    label: str
    events: int
    seconds: float
    cpu: Cpu = field(default_factory=Cpu)
    check: str = ""

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def database_name(url: str | None) -> str | None:
    return None if url is None else url.rsplit("/", 1)[1].split("?", 1)[0]


def drain(
    stack: Stack,
    queue: str,
    total: int,
    workers: list[Worker],
    label: str,
    database_url: str | None = None,
    timeout: float = 900.0,
) -> Drain:
    """Wait for `total` pre-loaded messages on `queue` to be taken and acknowledged."""
    pids = lambda: [p for w in workers for p in w.pids()]  # noqa: E731
    mains = lambda: [w.popen.pid for w in workers]  # noqa: E731
    meter = Meter(pids, stack.redis, database_name(database_url), mains)
    start: float | None = None
    deadline = time.monotonic() + timeout
    while True:
        waiting, unacked = _look(stack, queue)
        now = time.perf_counter()
        if start is None and (waiting < total or unacked):
            start = now
            meter.start()
        if start is not None and waiting == 0 and unacked == 0:
            return Drain(label, total, now - start, meter.stop())
        for worker in workers:
            if not worker.alive():
                raise RuntimeError(f"{label}: worker exited during the drain:\n{worker.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{label}: {waiting} still queued after {timeout}s")
        time.sleep(POLL)


def _look(stack: Stack, queue: str) -> tuple[int, int]:
    pipe = stack.redis.pipeline(transaction=False)
    pipe.llen(queue)
    pipe.hlen(UNACKED)
    waiting, unacked = pipe.execute()
    return int(waiting), int(unacked)


def wait_idle(stack: Stack, queue: str, workers: list[Worker], timeout: float = 300.0) -> None:
    """Until the queue is empty and nothing is unacknowledged (no timing)."""
    deadline = time.monotonic() + timeout
    while _look(stack, queue) != (0, 0):
        if time.monotonic() > deadline or not all(w.alive() for w in workers):
            raise RuntimeError(f"{queue} did not drain:\n{workers[0].tail()}")
        time.sleep(0.05)
