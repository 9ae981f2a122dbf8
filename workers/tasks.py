"""Celery tasks: thin adapters with stable names (docs/contract.md §2); the logic is elsewhere."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from workers import database_gate
from workers.errors import DeadLetteredError
from workers.handlers import handle_catalog_parsed, handle_stage_finished
from workers.messages import CATALOG_PARSED, STAGE_FINISHED
from workers.processing import process
from workers.schemas import CatalogParsedEvent, StageFinishedEvent

# `throws`: a dead-lettered event is an expected failure, logged without a second traceback.
# `max_retries=None`: Celery's own cap (3 by default) must never end an event; the project's
# IMAGEGROUPS_MAX_ATTEMPTS, counted in the database, is the only one.
_OPTIONS: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "max_retries": None,
    "throws": (DeadLetteredError,),
    # A revoked id never drops an event, nor does a remote `terminate` kill its handler
    # (workers/event_request.py); a worker whose database does not answer gives it back.
    "Request": database_gate.PATH,
}


# The task is positional-only, so that a keyword a publisher sends (even `self` or `task`)
# reaches the envelope check and is refused there, with a reason.
@shared_task(name=CATALOG_PARSED.task, **_OPTIONS)  # type: ignore[untyped-decorator]
def catalog_parsed(task: Any, /, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return process(task, CatalogParsedEvent, handle_catalog_parsed, args, kwargs)


@shared_task(name=STAGE_FINISHED.task, **_OPTIONS)  # type: ignore[untyped-decorator]
def stage_finished(task: Any, /, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return process(task, StageFinishedEvent, handle_stage_finished, args, kwargs)
