"""Handlers: plain functions, one unit of work (one transaction) per event or command.

Each takes a command in the domain's vocabulary (domain/commands.py) and its dependencies,
and returns what became of it with the follow-on messages its transaction wrote to the
outbox; publishing them is the caller's next step (workers/service.py).
"""

from __future__ import annotations

from workers.handlers.base import Deps, EventOutcome, Outcome, Result
from workers.handlers.deadlines import Expired, expire_overdue
from workers.handlers.events import handle_catalog_parsed, handle_stage_finished
from workers.handlers.operator import cleanup, request_stage

__all__ = [
    "Deps",
    "EventOutcome",
    "Expired",
    "Outcome",
    "Result",
    "cleanup",
    "expire_overdue",
    "handle_catalog_parsed",
    "handle_stage_finished",
    "request_stage",
]
