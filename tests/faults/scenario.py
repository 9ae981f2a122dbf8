"""What the fault scenarios share: quick recovery settings and a pipeline answering requests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import func, select

from persistence.models import ImageGroupRow
from tests.faults.invariants import Planned, fails_as_planned
from tests.faults.pipeline import Pipeline
from tests.integration.stack import Stack

#: Recovery in seconds: a short visibility timeout and a quick outbox sweep. Retries are
#: shorter too, but as with the defaults they outlast recovery: 8 deliveries span at least
#: 9.75 s, a dead worker's messages are back within 7 s (checked below). Copies of one event
#: run one chain of 8 between them (the first copy counted holds it), not one each.
QUICK = {
    "IMAGEGROUPS_VISIBILITY_TIMEOUT": "6",
    "IMAGEGROUPS_TASK_TIME_LIMIT": "3",
    "IMAGEGROUPS_RETRY_BACKOFF_BASE": "0.5",
    "IMAGEGROUPS_RETRY_BACKOFF_MAX": "4",
    "IMAGEGROUPS_OUTBOX_SWEEP_INTERVAL": "0.5",
    "IMAGEGROUPS_OUTBOX_SWEEP_GRACE": "1",
}


@contextmanager
def answering(
    s: Stack, plans: list[Planned], copies: tuple[int, int] = (1, 1)
) -> Iterator[Pipeline]:
    failing = fails_as_planned(plans)
    pipeline = Pipeline(
        s.redis_url,
        copies=copies,
        fails=lambda group, stage, attempt: attempt == 1 and failing.get(group) == stage,
    )
    pipeline.start()
    try:
        yield pipeline
    finally:
        pipeline.stop()


def progressed(s: Stack, count: int) -> bool:
    with s.engine.connect() as conn:
        done = conn.scalar(
            select(func.count()).select_from(ImageGroupRow).where(ImageGroupRow.status != "BUILT")
        )
    return (done or 0) >= count
