"""Housekeeping in the worker's main process: retention, and the sweep of stage deadlines.

Each is a periodic thread (workers/runtime/periodic.py) of its own beside the outbox sweep
(workers/outbox.py) rather than a step of it: each has its own interval, a slow or failing
run never holds up follow-ons, and the outbox sweep's health report stays about the outbox.
Several workers may sweep deadlines at once: each group is claimed under its row lock with
SKIP LOCKED and re-checked by the aggregate (workers/handlers.py), so a stage is
expired exactly once, and everything it needs is in the database, so restarts lose nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from persistence.retention import Cutoffs, prune
from workers.handlers import Expired, expire_overdue
from workers.runtime.periodic import Every
from workers.runtime.root import Runtime

log = logging.getLogger(__name__)


def prune_now(rt: Runtime, *, batch: int = 5000) -> dict[str, int]:
    """Delete what is past its retention (persistence/retention.py); returns counts."""
    now, settings = rt.now(), rt.settings
    cutoffs = Cutoffs(
        inbox=now - timedelta(seconds=settings.inbox_retention),
        outbox=now - timedelta(seconds=settings.outbox_retention),
        dead_letters=now - timedelta(seconds=settings.dead_letter_retention),
    )
    return prune(rt.engine, cutoffs, batch=batch)


def pruning(runtime: Callable[[], Runtime]) -> Every | None:
    """The retention thread for this worker, or None when IMAGEGROUPS_RETENTION_INTERVAL is 0."""
    interval = runtime().settings.retention_interval
    if not interval:
        return None

    def job() -> None:
        removed = prune_now(runtime())
        if any(removed.values()):
            log.info("retention removed %s", removed)

    return Every(job, interval=interval, name="retention")


def sweep_deadlines(rt: Runtime, *, batch: int = 100) -> list[Expired]:
    """FAIL every group whose deadline has passed, `batch` groups per transaction."""
    expired: list[Expired] = []
    while True:
        done = expire_overdue(deps=rt.deps, limit=batch)
        for stage in done:
            end = stage.ended
            log.warning(
                "image_group_id=%s %s attempt %d got no result by its deadline %s: FAILED "
                "(STAGE_TIMEOUT, event_id=%s)",
                stage.image_group_id,
                end.stage,
                end.attempt,
                stage.deadline_at.isoformat(),
                stage.event_id,
            )
            rt.metrics.expired(end)
        expired += done
        if len(done) < batch:
            return expired


def deadline_sweeping(runtime: Callable[[], Runtime]) -> Every:
    """The deadline thread for this worker, every IMAGEGROUPS_DEADLINE_SWEEP_INTERVAL."""
    interval = runtime().settings.deadline_sweep_interval
    return Every(lambda: sweep_deadlines(runtime()), interval=interval, name="deadline-sweep")
