"""The request Celery makes of each event message: not revocable, and held back while the
database is away.

The worker's request for an event task: no revocation or remote kill ends an event.

An event is a fact, and its task id is its event_id, which a publisher knows before the
event arrives. Celery discards and acknowledges a message whose id is in the worker's revoked
set (celery/worker/strategy.py, Request.revoked), and `revoke(terminate=True)` kills the
handler and acknowledges its message: either way the event would end with no outcome. The
remote-control policy refuses `revoke` by default (workers/broker/control_policy.py); this is the
second line, for an id that got into the set anyway (an operator's `full` remote control).
A wrong event ends as the state machine decides (stale, or a dead letter an operator can
discard), never unhandled.

A worker that cannot reach its database takes no events and gives back the ones it holds.

The probe (persistence/db.py) asks the database for `SELECT 1` every second, in a
thread of the worker's main process, and gives up on an answer after 2 s. The consumer's own
loop reads the verdict every second (only that loop may touch the consumer: kombu is not
thread-safe):
- no answer: stop consuming the event queue (Celery's `cancel_task_queue`, what the
  `cancel_consumer` remote command does) and give back, rejected with requeue (the Redis
  transport puts them back in the queue for a healthy worker), what the worker holds: events
  waiting for a pool process, retries whose countdown ends meanwhile, and handlers running
  for longer than the probe's deadline, whose pool process is killed as Celery does when the
  broker connection is lost (a handler takes milliseconds; one that long is stuck);
- an answer again: consume again.
A given-back event is a delivery like any other: the next worker counts it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import bootsteps
from celery.utils.imports import symbol_by_name
from celery.worker import state as celery_state
from celery.worker.request import Request
from celery.worker.state import active_requests, reserved_requests, task_ready

from workers.runtime.root import PROBE_INTERVAL, PROBE_TIMEOUT, runtime, state

log = logging.getLogger(__name__)

#: The path the event tasks name as their `Request` (workers/edge/task.py).
EVENT_REQUEST_PATH = "workers.edge.gate:EventRequest"


class EventRequest(Request):  # type: ignore[misc]
    """A request that is never revoked and never terminated by remote control.

    The hard time limit still ends a handler that hangs (its event comes back, counted), and
    a lost broker connection still cancels running handlers (their events come back too).
    """

    __slots__ = ()

    def revoked(self) -> bool:
        if self.id in celery_state.revoked:
            # Forgotten once seen: the retries of the event carry the same id.
            celery_state.revoked.discard(self.id)
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


#: The path the event tasks name as their `Request` (workers/edge/task.py).
GATED_REQUEST_PATH = "workers.edge.gate:GatedRequest"

#: A handler still running this long after it started, while the database does not answer,
#: is stuck on it: its event is given back.
STUCK_AFTER = PROBE_TIMEOUT


def give_back(request: Any) -> None:
    """Hand a request back to the queue for a worker that can reach its database."""
    task_ready(request)
    request.reject(requeue=True)
    state().gate.given_back += 1
    state().counting.recorder.given_back()


class GatedRequest(EventRequest):
    """An event's request that a worker not taking events gives back instead of running.

    Celery calls `revoked()` first thing when it hands a request to the pool (the request
    class built by celery/worker/request.py:create_request_cls), and skips the request when
    it says so, freeing its pool slot; tests/unit/test_database_gate.py checks that it does.
    """

    __slots__ = ()

    def revoked(self) -> bool:
        if self.acknowledged:  # given back while it waited for a pool process
            return True
        if not state().gate.taking:
            give_back(self)
            return True
        return bool(super().revoked())


class HookMissingError(RuntimeError):
    """An event task does not run with the request the gate needs."""


def require_gated_requests(app: Any) -> None:
    for name, task in app.tasks.items():
        if not name.startswith("celery.") and not issubclass(
            symbol_by_name(task.Request), GatedRequest
        ):
            raise HookMissingError(f"task {name} runs without {GATED_REQUEST_PATH}")


class DatabaseGate(bootsteps.StartStopStep):  # type: ignore[misc]
    """The consumer's side of the gate: pause, give back, resume, once a second."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        require_gated_requests(c.app)
        self.tick_ref: Any = None
        self.paused: list[str] | None = None  # the queues it stopped consuming

    def start(self, c: Any) -> None:
        settings = runtime().settings
        state().gate.watch(settings.database_url, settings.lock_timeout_ms)
        self.tick_ref = c.timer.call_repeatedly(PROBE_INTERVAL, self.tick, (c,))

    def stop(self, c: Any) -> None:
        if self.tick_ref is not None:
            self.tick_ref.cancel()
            self.tick_ref = None

    def shutdown(self, c: Any) -> None:
        self.stop(c)
        state().gate.stop()

    def tick(self, c: Any) -> None:
        if self.paused is None and not state().gate.reachable:
            self.pause(c)
        elif self.paused is not None and state().gate.reachable:
            self.resume(c)
        elif self.paused is not None:
            give_back_held(c)

    def pause(self, c: Any) -> None:
        self.paused = [queue.name for queue in c.task_consumer.queues]
        state().gate.taking = state().health.taking_events = False
        state().counting.recorder.taking_events(False)
        for queue in self.paused:
            c.cancel_task_queue(queue)
        held = give_back_held(c)
        log.warning(
            "the database does not answer (%s): this worker takes no events from %s until it "
            "does, and gave back the %d it held",
            state().gate.error,
            ", ".join(self.paused),
            held,
        )

    def resume(self, c: Any) -> None:
        queues, self.paused = self.paused or [], None
        for queue in queues:
            c.add_task_queue(queue)
        state().gate.taking = state().health.taking_events = True
        state().counting.recorder.taking_events(True)
        log.warning("the database answers again: taking events from %s", ", ".join(queues))


def give_back_held(c: Any) -> int:
    """Give back what this worker holds and has not finished; returns how many."""
    held = 0
    for request in list(reserved_requests):
        # Not yet handed to the pool (the pool's own result is set then): it waits for a slot.
        if request in active_requests or request.acknowledged:
            continue
        if getattr(request, "_apply_result", None) is None:
            give_back(request)
            held += 1
    now = time.time()
    for request in list(active_requests):
        started = request.time_start
        if request.acknowledged or not started or now - started < STUCK_AFTER:
            continue
        request.cancel(c.pool, emit_retry=False)
        give_back(request)
        held += 1
    return held
