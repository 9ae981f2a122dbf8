"""Canaries: the private or undocumented Celery, CPython and prometheus_client code we hook.

Each runs the library's own code and fails when the installed version stops calling what we
replace: Celery's loops take the consumer's message handler from `create_task_handler()`,
the header filter knows every header Celery's own messages carry (and the request reads its
stamps from them), `TracebackException._str` is what a traceback prints, a worker thread
finds the app made Celery's default, and prometheus_client's value class says whether it
counts across processes.
"""

from __future__ import annotations

import inspect
import json
import threading
import traceback
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery, current_app
from celery.worker import loops
from celery.worker.consumer.consumer import Consumer
from celery.worker.request import Request
from kombu.message import Message

from workers.edge import accept

TASK = "imagegroups.canary"
#: Headers Celery's own messages carry that the filter removes, each on purpose: the worker's
#: time limit applies, an event never expires, and nothing a publisher stamps steers it.
STRIPPED = {"timelimit", "expires", "stamped_headers", "stamps", "replaced_task_nesting"}


class _Stop(Exception):
    pass


def _stop(*_args: Any) -> None:
    raise _Stop


def test_celery_s_event_loop_installs_the_handler_create_task_handler_returns() -> None:
    handler = object()
    obj = SimpleNamespace(
        create_task_handler=lambda: handler,
        timer_entries_before_start=set(),
        event_dispatcher=None,
        controller=SimpleNamespace(register_with_event_loop=_stop),
    )
    connection = SimpleNamespace(
        connection_errors=(), get_heartbeat_interval=lambda: 0, supports_heartbeats=False
    )
    consumer = SimpleNamespace()
    hub, qos = SimpleNamespace(timer=None), SimpleNamespace(update=None)
    with pytest.raises(_Stop):
        loops.asynloop(obj, connection, consumer, None, hub, qos, None, None)
    assert consumer.on_message is handler
    assert "create_task_handler" in vars(Consumer)


def test_celery_s_blocking_loop_installs_the_same_handler() -> None:
    handler = object()
    obj = SimpleNamespace(
        create_task_handler=lambda: handler, perform_pending_operations=None, pool=None
    )
    consumer = SimpleNamespace(consume=_stop)
    with pytest.raises(_Stop):
        loops.synloop(obj, None, consumer, None, None, None, None, None)
    assert consumer.on_message is handler


def _celery_message(app: Celery) -> Message:
    """A task message exactly as Celery builds one, with a stamp a publisher set."""
    sent = app.amqp.as_task_v2(
        str(uuid.uuid4()), TASK, args=(), kwargs={"event": {}}, stamped_headers=["x"], x="1"
    )
    return Message(  # type: ignore[no-untyped-call]
        body=json.dumps(list(sent.body)).encode(),
        content_type="application/json",
        content_encoding="utf-8",
        headers=dict(sent.headers),
        properties={},
        delivery_info={"exchange": "", "routing_key": "imagegroups.events"},
    )


def test_the_header_filter_knows_every_header_celery_s_own_messages_carry() -> None:
    app = Celery("canary", set_as_current=False)
    message = _celery_message(app)
    sent = set(message.headers)
    accept.check(message, {TASK}, now=datetime.now(UTC), max_eta=timedelta(minutes=5))
    # A new header in Celery fails here: pass it or strip it, knowingly.
    assert sent - set(message.headers) == STRIPPED


def _event_task(event: Any) -> None:
    """A task named like an event task, for a request to be built around."""


def test_celery_s_request_reads_its_stamps_from_the_headers_the_filter_strips() -> None:
    app = Celery("canary", set_as_current=False)
    task = app.task(name=TASK, shared=False)(_event_task)
    unfiltered = Request(_celery_message(app), app=app, task=task)
    assert unfiltered.stamped_headers == ["x"] and unfiltered.stamps == {"x": "1"}
    message = _celery_message(app)
    accept.check(message, {TASK}, now=datetime.now(UTC), max_eta=timedelta(minutes=5))
    filtered = Request(message, app=app, task=task)
    assert filtered.stamped_headers == [] and filtered.stamps == {}


def test_a_traceback_prints_the_message_it_keeps_in_str() -> None:
    summary = traceback.TracebackException.from_exception(ValueError("line\nbreak"))
    assert summary._str == "line\nbreak"  # type: ignore[attr-defined]
    summary._str = "replaced"  # type: ignore[attr-defined]
    assert "".join(summary.format_exception_only()) == "ValueError: replaced\n"


def test_a_thread_that_never_set_an_app_gets_the_one_made_celery_s_default() -> None:
    before = current_app._get_current_object()
    demo = Celery("canary-default", set_as_current=False)
    seen: list[Celery] = []
    demo.set_default()
    try:
        thread = threading.Thread(target=lambda: seen.append(current_app._get_current_object()))
        thread.start()
        thread.join()
    finally:
        before.set_default()
    assert seen == [demo]


def test_prometheus_s_value_class_says_whether_it_counts_across_processes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from prometheus_client import values

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert getattr(values.get_value_class(), "_multiprocess", False) is False  # type: ignore[no-untyped-call]
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert values.get_value_class()._multiprocess is True  # type: ignore[no-untyped-call]


def test_celery_buffers_task_events_and_asks_the_consumer_when_to_publish_them() -> None:
    # Celery's Events step hands its dispatcher the consumer's `on_send_event_buffered` and
    # buffers the task group when there is an event loop: the batch's timer rests on both.
    from celery.worker.consumer.events import Events

    app = Celery("canary", broker="memory://", set_as_current=False)
    asked: list[int] = []
    c: Any = SimpleNamespace(
        app=app,
        hostname="canary@host",
        hub=object(),
        event_dispatcher=None,
        amqheartbeat=None,
        connection_for_write=app.connection_for_write,
        on_send_event_buffered=lambda: asked.append(1),
    )
    step = Events(c)
    step.start(c)
    try:
        published: list[Any] = []
        c.event_dispatcher._publish = lambda event, *a, **k: published.append(event)
        c.event_dispatcher.send("task-received", uuid="u1")
        c.event_dispatcher.send("task-started", uuid="u1")
        assert asked == [1, 1] and published == []
        c.event_dispatcher.flush()
        [batch] = published
        assert [e["type"] for e in batch] == ["task-received", "task-started"]
    finally:
        step.shutdown(c)


def test_the_consumer_publishes_the_task_events_of_one_batch_together() -> None:
    from kombu.asynchronous import Hub

    from workers.edge import task as edge_consumer

    hub: Any = Hub()  # type: ignore[no-untyped-call]
    flushed: list[int] = []
    c: Any = SimpleNamespace(
        hub=hub,
        _events_due=None,
        _loop_thread=threading.get_ident(),
        _flush_events=lambda: flushed.append(1),
    )
    c._flush_batch = lambda: edge_consumer.DeadLetteringConsumer._flush_batch(c)
    try:
        for _ in range(3):
            edge_consumer.DeadLetteringConsumer.on_send_event_buffered(c)
        assert len(hub.timer.queue) == 1 and flushed == []
        import time

        time.sleep(edge_consumer.EVENTS_BATCH_SECONDS)
        hub.fire_timers()
        assert flushed == [1] and c._events_due is None
    finally:
        hub.close()


def test_celery_s_event_loop_registers_the_consumer_with_its_hub_in_the_loop_s_thread() -> None:
    # The task events' batch timer is set only from the thread that registered (edge/task.py).
    from celery.worker import loops

    assert "obj.register_with_event_loop(hub)" in inspect.getsource(loops.asynloop)
