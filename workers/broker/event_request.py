"""The worker's request for an event task: no revocation or remote kill ends an event.

An event is a fact, and its task id is its event_id, which a publisher knows before the
event arrives. Celery discards and acknowledges a message whose id is in the worker's revoked
set (celery/worker/strategy.py, Request.revoked), and `revoke(terminate=True)` kills the
handler and acknowledges its message: either way the event would end with no outcome. The
remote-control policy refuses `revoke` by default (workers/broker/control_policy.py); this is the
second line, for an id that got into the set anyway (an operator's `full` remote control).
A wrong event ends as the state machine decides (stale, or a dead letter an operator can
discard), never unhandled.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker import state
from celery.worker.request import Request

log = logging.getLogger(__name__)

#: The path the event tasks name as their `Request` (workers/edge/task.py).
PATH = "workers.broker.event_request:EventRequest"


class EventRequest(Request):  # type: ignore[misc]
    """A request that is never revoked and never terminated by remote control.

    The hard time limit still ends a handler that hangs (its event comes back, counted), and
    a lost broker connection still cancels running handlers (their events come back too).
    """

    __slots__ = ()

    def revoked(self) -> bool:
        if self.id in state.revoked:
            # Forgotten once seen: the retries of the event carry the same id.
            state.revoked.discard(self.id)
            log.warning(
                "event task_id=%s was revoked by remote control: ignored, an event is a fact "
                "and every event ends with an outcome (applied, duplicate, stale or dead letter)",
                self.id,
            )
        return False

    def terminate(self, pool: Any, signal: Any = None) -> None:
        log.warning(
            "event task_id=%s: remote termination ignored, the handler runs to its end or to "
            "its time limit (which brings the event back)",
            self.id,
        )
