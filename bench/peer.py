"""The naive peer's throughput (bench/naive_app.py), drained exactly as the worker's own.

The same pre-loaded envelopes on the same queue, the same worker count; counted done when the
queue is drained and every message acknowledged, then checked row by row in its own tables.
"""

from __future__ import annotations

from sqlalchemy import create_engine, text

from bench import events
from bench.anchors import FOLLOW_ON_QUEUE, Ours, drain_catalog_then_build, park_catalog_then_build
from bench.stack import NAIVE, Stack
from tests.pg import fresh_database

_COUNTS = {
    "catalogs": "SELECT count(*) FROM catalogs",
    "deploying": "SELECT count(*) FROM image_groups WHERE status = 'DEPLOYING'",
    "images": "SELECT count(*) FROM images",
    "history": "SELECT count(*) FROM group_history",
}


def naive(stack: Stack, n: int, concurrency: int) -> Ours:
    """`n` catalog.parsed events, then `n` build results, on the naive peer's workers."""
    park_catalog_then_build(stack, n)
    with fresh_database("bench") as url, stack.workers(NAIVE, concurrency, stack.env(url)) as w:
        found = drain_catalog_then_build(stack, n, w, url, "naive peer ")
        check(stack, url, n, found)
    stack.redis.delete(FOLLOW_ON_QUEUE)
    return found


def counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {k: int(conn.execute(text(q)).scalar_one()) for k, q in _COUNTS.items()}
    finally:
        engine.dispose()


def check(stack: Stack, url: str, n: int, found: Ours) -> None:
    """That every event did what it should, in the peer's own tables."""
    c = counts(url)
    sent = stack.redis.llen(FOLLOW_ON_QUEUE)
    roles = len(events.ROLES)
    found.catalog.check = f"catalogs {c['catalogs']}/{n}"
    found.build.check = (
        f"DEPLOYING {c['deploying']}/{n}, images {c['images']}/{roles * n}, "
        f"history {c['history']}/{n}, deploy requests {sent}"
    )
    wanted = {"catalogs": n, "deploying": n, "images": roles * n, "history": n}
    if c != wanted or sent < n:
        raise RuntimeError(
            f"the naive peer did not handle every event: {found.catalog.check}; {found.build.check}"
        )
