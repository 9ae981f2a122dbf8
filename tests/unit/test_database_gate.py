"""Canaries for the Celery code the database gate relies on (workers/edge/task.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from celery.exceptions import TaskRevokedError
from celery.worker import state
from celery.worker.request import create_request_cls
from celery.worker.worker import WorkController
from kombu.message import Message

from workers.celery import app
from workers.edge import task as event_task
from workers.edge.task import DatabaseGate, GatedRequest, give_back, require_gated_requests
from workers.runtime.root import state as process_state

TASK = "imagegroups.stage_finished"


class _Job:
    """What a pool returns for a job it accepted."""


class _Pool:
    def __init__(self) -> None:
        self.applied: list[Any] = []

    def apply_async(self, *args: Any, **kwargs: Any) -> _Job:
        self.applied.append((args, kwargs))
        return _Job()


class _Message(Message):
    def __init__(self) -> None:
        headers = {"task": TASK, "id": "e1", "retries": 0, "timelimit": [None, None]}
        body = json.dumps([[], {"event": {}}, {}]).encode()
        super().__init__(  # type: ignore[no-untyped-call]
            body=body,
            content_type="application/json",
            content_encoding="utf-8",
            headers=headers,
            properties={},
            delivery_info={"exchange": "", "routing_key": "imagegroups.events"},
        )
        self.settled: list[tuple[str, bool]] = []

    def reject_log_error(self, logger: Any, errors: Any, requeue: bool = False) -> None:
        self.settled.append(("reject", requeue))


def _request(pool: _Pool) -> tuple[Any, _Message]:
    task = app.tasks[TASK]
    cls = create_request_cls(GatedRequest, task, pool, "h", None, app=app)
    message = _Message()
    request = cls(message, app=app, task=task, hostname="h", on_reject=message.reject_log_error)
    state.task_reserved(request)
    return request, message


@pytest.fixture
def closed_gate() -> Iterator[None]:
    process_state().health.taking_events = False
    try:
        yield
    finally:
        process_state().health.taking_events = True


def test_celery_asks_the_request_before_handing_it_to_the_pool(closed_gate: None) -> None:
    pool = _Pool()
    request, message = _request(pool)
    with pytest.raises(TaskRevokedError):
        request.execute_using_pool(pool)
    assert pool.applied == [], "a worker that takes no events ran one"
    assert message.settled == [("reject", True)], "the event was not given back to the queue"
    assert request not in state.reserved_requests


def test_a_request_given_back_while_it_waited_is_never_run_and_frees_its_slot() -> None:
    pool = _Pool()
    request, message = _request(pool)
    give_back(request)  # while it waited for a pool process
    released: list[bool] = []
    worker = SimpleNamespace(pool=pool, _quick_release=lambda: released.append(True))
    WorkController._process_task(worker, request)  # what the pool slot's waiter calls
    assert pool.applied == [] and released == [True]
    assert message.settled == [("reject", True)], "given back once, never settled again"


def test_an_open_gate_hands_the_request_to_the_pool_which_marks_it_as_its_own() -> None:
    pool = _Pool()
    request, message = _request(pool)
    assert request._apply_result is None
    request.execute_using_pool(pool)
    assert len(pool.applied) == 1 and message.settled == []
    # How give_back_held tells a request in the pool from one waiting for a slot.
    assert request._apply_result is not None
    state.task_ready(request)


def test_the_event_worker_runs_the_gate_with_the_gated_request() -> None:
    require_gated_requests(app)
    assert DatabaseGate in app.steps["consumer"]
    assert event_task.GATED_REQUEST_PATH.endswith(":GatedRequest")
