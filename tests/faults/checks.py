"""What the fault tests look at: outcomes, dead letters, queues, and whether a worker works."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence

from sqlalchemy import Engine, select, text

from domain import DeadLetter
from persistence.models import DeadLetterRow, ProcessedEventRow
from tests.integration.flow import new_job, start_group, wait_status
from tests.integration.stack import Process, Stack, wait_for

EVENTS_QUEUE = "imagegroups.events"
#: What Celery's consumer logs when it drops its broker connection and starts again.
RECONNECT = "Connection to broker lost"


def outcome(s: Stack, event_id: str) -> str | None:
    """The inbox's outcome for an event: applied, duplicate or stale; None if never handled."""
    with s.engine.connect() as conn:
        return conn.scalar(
            select(ProcessedEventRow.outcome).where(ProcessedEventRow.event_id == event_id)
        )


def letters(s: Stack) -> list[DeadLetter]:
    return s.query(lambda uow: uow.dead_letters.list())


def holds(body: str, marker: str) -> bool:
    """Whether a stored dead-letter body holds `marker`: binary bodies are kept in base64, and
    a body sent without its base64 being decoded (a bent envelope) is base64 text itself."""
    if marker in body:
        return True
    try:
        decoded = base64.b64decode(body.removeprefix("base64:"), validate=True)
    except ValueError:
        return False
    return marker.encode() in decoded


def letters_for(s: Stack, marker: str) -> list[DeadLetter]:
    """Dead letters whose stored body or task name contains `marker`."""
    return [d for d in letters(s) if holds(d.body, marker) or marker in d.task_name]


def wait_outcomes(s: Stack, markers: Sequence[str], timeout: float) -> set[str]:
    """Wait until each marker is handled (in the inbox) or dead-lettered; return the handled."""
    waiting: list[str] = []

    def settled() -> bool:
        with s.engine.connect() as conn:
            handled = set(conn.scalars(select(ProcessedEventRow.event_id)))
            bodies = list(conn.scalars(select(DeadLetterRow.body)))
        waiting[:] = [
            m for m in markers if m not in handled and not any(holds(b, m) for b in bodies)
        ]
        return not waiting

    try:
        wait_for(settled, timeout=timeout, what="every message to end", every=0.5)
    except AssertionError:
        raise AssertionError(f"no outcome for {len(waiting)}: {waiting[:10]}") from None
    with s.engine.connect() as conn:
        return set(conn.scalars(select(ProcessedEventRow.event_id))) & set(markers)


def broker_is_drained(s: Stack) -> bool:
    """No message waiting in the events queue and none delivered but unacknowledged."""
    return s.redis.llen(EVENTS_QUEUE) == 0 and s.redis.hlen("unacked") == 0


def still_consuming(s: Stack, worker: Process | None = None, timeout: float = 30) -> None:
    """A fresh group goes from catalog to DEPLOYING: the worker is alive and consuming."""
    group_id = f"canary-{uuid.uuid4().hex[:8]}"
    start_group(s, group_id, new_job())
    wait_status(s, group_id, "DEPLOYING", timeout=timeout)
    if worker is not None:
        assert RECONNECT not in worker.output(), "the worker dropped its broker connection"


def lock_wait_seconds(engine: Engine) -> float:
    """How long the longest wait on a row lock in this database has lasted so far."""
    with engine.connect() as conn:
        waited = conn.execute(
            text(
                "SELECT coalesce(max(extract(epoch FROM now() - query_start)), 0) "
                "FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
        ).scalar_one()
    return float(waited)
