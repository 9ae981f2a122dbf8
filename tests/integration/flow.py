"""Helpers that drive image groups through the worker, as a publisher would."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from domain import ImageGroupId, ImageGroupStatus, OutboxMessage, Transition
from persistence.models import OutboxRow, outbox_to_entity
from tests.integration.stack import Stack, wait_for
from workers import outbox

HAPPY = [
    (None, "BUILT"),
    ("BUILT", "DEPLOYING"),
    ("DEPLOYING", "DEPLOYED"),
    ("DEPLOYED", "RESTARTING"),
    ("RESTARTING", "RESTARTED"),
    ("RESTARTED", "VALIDATING"),
    ("VALIDATING", "PASSED"),
]


def new_job() -> str:
    return str(uuid.uuid4())


def start_group(s: Stack, group_id: str, job_id: str, roles: list[str] | None = None) -> None:
    outbox.send(s.client, outbox.catalog_parsed(job_id, group_id, roles or ["compute"]))
    outbox.send(s.client, outbox.stage_finished(job_id, "build-image", "succeeded"))


def wait_status(s: Stack, group_id: str, status: str, timeout: float = 30) -> None:
    def reached() -> bool:
        group = s.group(group_id)
        return group is not None and group.status == ImageGroupStatus(status)

    wait_for(reached, timeout=timeout, what=f"{group_id} to reach {status}")


def history(s: Stack, group_id: str) -> list[Transition]:
    return s.query(lambda uow: uow.history.list_for_group(ImageGroupId(group_id)))


def moves(s: Stack, group_id: str) -> list[tuple[str | None, str]]:
    return [(t.from_status, t.to_status) for t in history(s, group_id)]


def follow_ons(s: Stack, group_id: str) -> list[OutboxMessage]:
    """The group's follow-on events in the outbox, oldest first (a test's own read)."""
    with s.engine.connect() as conn:
        rows = conn.execute(
            select(OutboxRow)
            .where(OutboxRow.image_group_id == group_id)
            .order_by(OutboxRow.created_at, OutboxRow.event_id)
        )
        return [outbox_to_entity(row) for row in rows]
