"""The throughput anchors: bare Celery no-op (plain and observed) and the worker's own events.

Every queue is pre-loaded and parked before the workers start; once they all answer a ping it
is put back at once, and the drain is timed from the first message taken.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import create_engine, text

from bench import events
from bench.drain import Drain, drain
from bench.noop_app import COMMITS_TABLE
from bench.stack import NOOP, OURS, Stack, Worker
from tests.pg import fresh_database

FOLLOW_ON_QUEUE = "pipeline.deploy"


def bare(
    stack: Stack,
    n: int,
    concurrency: int,
    *,
    observed: bool = False,
    task_events: bool = False,
    commit: bool = False,
    count: int = 1,
) -> Drain:
    """No-op tasks: Celery defaults + acks_late; `observed` adds events and stored results,
    `task_events` the events alone (results as the worker stores them: bench/noop_app.py);
    `commit` makes each task one single-row INSERT, committed, in a fresh database."""
    mode = "1" if observed else "events" if task_events else "0"
    label = {
        "1": "bare Celery + events + results",
        "events": "bare Celery + task events",
        "0": "bare Celery no-op",
    }[mode]
    if not commit:
        return _drain_noop(stack, n, concurrency, count, label, BENCH_NOOP_OBSERVED=mode)
    with fresh_database("bench") as url:
        engine = create_engine(url)
        try:
            with engine.begin() as conn:
                conn.execute(text(COMMITS_TABLE))
            found = _drain_noop(
                stack,
                n,
                concurrency,
                count,
                f"{label} + one commit",
                BENCH_NOOP_OBSERVED=mode,
                BENCH_NOOP_COMMIT=url,
            )
            with engine.connect() as conn:
                done = int(conn.execute(text("SELECT count(*) FROM bench_commits")).scalar_one())
        finally:
            engine.dispose()
    found.check = f"committed {done}/{n}"
    if done != n:
        raise RuntimeError(f"the no-op worker did not commit every task: {found.check}")
    return found


def _drain_noop(
    stack: Stack, n: int, concurrency: int, count: int, label: str, **env: str
) -> Drain:
    r = stack.redis
    r.delete(events.NOOP_QUEUE)
    events.preload_noop(stack.client, n)
    events.park(r, events.NOOP_QUEUE, "noop")
    with stack.workers(NOOP, concurrency, stack.env(**env), count) as workers:
        stack.calm()
        events.release(r, events.NOOP_QUEUE, "noop")
        return drain(stack, events.NOOP_QUEUE, n, workers, label)


@dataclass
class Ours:
    catalog: Drain
    build: Drain


def ours(stack: Stack, n: int, concurrency: int, *, count: int = 1, url: str = "") -> Ours:
    """`n` catalog.parsed events, then `n` build-image results, on one running worker set."""
    if not url:
        with stack.database() as fresh:
            return ours(stack, n, concurrency, count=count, url=fresh)
    park_catalog_then_build(stack, n)
    before = counts(url)
    with stack.workers(OURS, concurrency, stack.env(url), count) as workers:
        found = drain_catalog_then_build(stack, n, workers, url)
    check(stack, url, n, before, found)
    stack.redis.delete(FOLLOW_ON_QUEUE)  # the pipeline would have taken them
    return found


def park_catalog_then_build(stack: Stack, n: int) -> None:
    """`n` new groups' catalog.parsed events, then their build-image results, parked apart."""
    r = stack.redis
    r.delete(events.EVENTS_QUEUE, FOLLOW_ON_QUEUE)
    groups = events.groups(n)
    events.preload(stack.client, (events.catalog_parsed(g) for g in groups))
    events.park(r, events.EVENTS_QUEUE, "catalog")
    events.preload(stack.client, (events.stage_finished(g, "build-image") for g in groups))
    events.park(r, events.EVENTS_QUEUE, "build")


def drain_catalog_then_build(
    stack: Stack, n: int, workers: list[Worker], url: str, who: str = ""
) -> Ours:
    """The parked catalog.parsed events drained by `workers`, then the build results."""
    stack.calm()
    events.release(stack.redis, events.EVENTS_QUEUE, "catalog")
    catalog = drain(stack, events.EVENTS_QUEUE, n, workers, f"{who}catalog.parsed", url)
    stack.calm()
    events.release(stack.redis, events.EVENTS_QUEUE, "build")
    build = drain(stack, events.EVENTS_QUEUE, n, workers, f"{who}build-image succeeded", url)
    return Ours(catalog, build)


_APPLIED = text(
    "SELECT count(*) FROM processed_events WHERE task_name = :t AND outcome = 'applied'"
)
_DEPLOYING = text("SELECT count(*) FROM image_groups WHERE status = 'DEPLOYING'")
_LETTERS = text("SELECT count(*) FROM dead_letters")


def counts(url: str) -> tuple[int, int, int]:
    """Applied catalogs, groups in DEPLOYING, dead letters."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            applied = conn.execute(_APPLIED, {"t": events.TASKS["catalog.parsed"]}).scalar_one()
            deploying = conn.execute(_DEPLOYING).scalar_one()
            letters = conn.execute(_LETTERS).scalar_one()
    finally:
        engine.dispose()
    return int(applied), int(deploying), int(letters)


def check(stack: Stack, url: str, n: int, before: tuple[int, int, int], ours: Ours) -> None:
    """That every event did what it should (a drain of dead letters would look fast)."""
    applied, deploying, letters = (a - b for a, b in zip(counts(url), before, strict=True))
    sent = stack.redis.llen(FOLLOW_ON_QUEUE)
    ours.catalog.check = f"applied {applied}/{n}, dead letters {letters}"
    ours.build.check = f"DEPLOYING {deploying}/{n}, deploy requests {sent}, dead letters {letters}"
    if applied != n or deploying != n or sent < n or letters:
        raise RuntimeError(
            f"the worker did not handle every event: {ours.catalog.check}; {ours.build.check}"
        )


@dataclass
class Throughput:
    events: int
    concurrency: int
    bare: Drain
    observed: Drain
    catalog: Drain
    build: Drain

    def ratios(self) -> dict[str, float]:
        base = self.bare.rate
        return {
            "observed": self.observed.rate / base,
            "catalog": self.catalog.rate / base,
            "build": self.build.rate / base,
        }


def median(drains: list[Drain]) -> Drain:
    """The run with the median rate (the lower middle one of an even count)."""
    ordered = sorted(drains, key=lambda d: d.rate)
    middle = ordered[(len(ordered) - 1) // 2]
    if len(drains) > 1:
        runs = "runs " + ", ".join(f"{d.rate:.0f}/s" for d in drains)
        middle.check = f"{middle.check}; {runs}" if middle.check else runs
    return middle


def throughput(stack: Stack, n: int, concurrency: int, repeat: int = 1) -> Throughput:
    """Every anchor `repeat` times, interleaved, so drift hits them alike; medians kept."""
    runs: dict[str, list[Drain]] = {"bare": [], "observed": [], "catalog": [], "build": []}
    for _ in range(repeat):
        runs["bare"].append(bare(stack, n, concurrency))
        runs["observed"].append(bare(stack, n, concurrency, observed=True))
        pair = ours(stack, n, concurrency)
        runs["catalog"].append(pair.catalog)
        runs["build"].append(pair.build)
    picked = {name: median(drains) for name, drains in runs.items()}
    return Throughput(n, concurrency, **picked)
