"""Reaction time: a deploy result published for a group in DEPLOYING, until its follow-on
`pipeline.pxe_boot` message reaches that queue in Redis, at a paced load.

A thread BRPOPs the follow-on queue and notes `time.time()` as each message arrives; the
follow-on's `causation_id` names the deploy result it answers, whose publish time was noted
just before it was sent.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

import redis
from sqlalchemy import create_engine, text

from bench import events
from bench.drain import wait_idle
from bench.stack import OURS, Stack, Worker

FOLLOW_ON = "pipeline.pxe_boot"
_DEPLOYING = text("SELECT count(*) FROM image_groups WHERE status = 'DEPLOYING'")


@dataclass
class Reaction:
    rate: float
    seconds: float
    sent: int
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def missing(self) -> int:
        return self.sent - len(self.latencies_ms)

    def percentile(self, p: float) -> float:
        """Nearest rank; NaN without samples."""
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return math.nan
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    def summary(self) -> dict[str, float]:
        return {
            "p50_ms": self.percentile(50),
            "p99_ms": self.percentile(99),
            "max_ms": max(self.latencies_ms, default=math.nan),
        }


class Arrivals:
    """BRPOP on the follow-on queue; arrival time per causation_id."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="arrivals", daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            item = self.client.brpop([FOLLOW_ON], timeout=0.2)
            if item is None:
                continue
            at = time.time()
            cause = events.event_of(item[1]).get("causation_id")
            if isinstance(cause, str):
                self.seen.setdefault(cause, at)


def _prepare(stack: Stack, url: str, groups: list[events.Group], workers: list[Worker]) -> None:
    """Every group in DEPLOYING: its catalog, then its build result, through the worker."""
    for make in (events.catalog_parsed, lambda g: events.stage_finished(g, "build-image")):
        events.preload(stack.client, (make(g) for g in groups))
        wait_idle(stack, events.EVENTS_QUEUE, workers)
    engine = create_engine(url)
    try:
        deadline = time.monotonic() + 60
        with engine.connect() as conn:
            while conn.execute(_DEPLOYING).scalar_one() < len(groups):
                if time.monotonic() > deadline:
                    raise RuntimeError("groups did not all reach DEPLOYING")
                conn.rollback()
                time.sleep(0.1)
    finally:
        engine.dispose()
    stack.redis.delete("pipeline.deploy", FOLLOW_ON)


def reaction(stack: Stack, rate: float, seconds: float, concurrency: int = 2) -> Reaction:
    """Deploy results at `rate` per second for `seconds`, one per group, evenly spaced."""
    groups = events.groups(max(1, round(rate * seconds)), prefix="react")
    result = Reaction(rate, seconds, len(groups))
    with stack.database() as url, stack.workers(OURS, concurrency, stack.env(url)) as workers:
        _prepare(stack, url, groups, workers)
        arrivals = Arrivals(stack.broker)
        arrivals.thread.start()
        stack.calm()
        published = _pace(stack, groups, rate)
        deadline = time.monotonic() + 10
        while len(arrivals.seen) < len(published) and time.monotonic() < deadline:
            time.sleep(0.05)
        arrivals.stop.set()
        arrivals.thread.join(5)
    result.latencies_ms = [
        (arrivals.seen[eid] - at) * 1000 for eid, at in published.items() if eid in arrivals.seen
    ]
    return result


def _pace(stack: Stack, groups: list[events.Group], rate: float) -> dict[str, float]:
    """Publish on an absolute schedule (no drift); event_id → time just before the send."""
    published: dict[str, float] = {}
    start = time.monotonic()
    with stack.client.producer_or_acquire() as producer:
        for i, group in enumerate(groups):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            event = events.stage_finished(group, "deploy")
            published[event["event_id"]] = time.time()
            events.send(stack.client, event, producer)
    return published
