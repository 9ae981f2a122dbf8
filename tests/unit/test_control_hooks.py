"""Canaries: the private parts of Celery and kombu the remote-control guard hooks into.

Each fails loudly when the installed Celery or kombu stops building what we replace: the
pidbox node's command table, the consumer blueprint's Control step, the worker-to-worker sync
switches, the request class a task names, and the two places a revoked id is acted on.
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery
from celery.utils.imports import symbol_by_name
from celery.worker import control as celery_control
from celery.worker import pidbox, strategy
from celery.worker.consumer.consumer import Consumer
from celery.worker.consumer.control import Control
from celery.worker.consumer.gossip import Gossip
from celery.worker.consumer.mingle import Mingle
from celery.worker.control import Panel
from celery.worker.request import Request

from workers.broker import control_step
from workers.broker.control_policy import ControlPolicy
from workers.celery import app
from workers.edge import task as event_task
from workers.runtime.root import COMMAND


def a_pidbox() -> pidbox.Pidbox:
    """The remote-control box Celery's Control step builds, for a consumer without I/O."""
    celery = Celery("canary", broker="memory://")
    consumer = SimpleNamespace(
        app=celery, hostname="canary@host", controller=SimpleNamespace(use_eventloop=True)
    )
    return pidbox.Pidbox(consumer)


def test_celery_builds_the_pidbox_node_from_the_panel_s_command_table() -> None:
    box = a_pidbox()
    assert box.node.handlers is Panel.data
    assert {"ping", "shutdown", "revoke", "hello", COMMAND} <= set(Panel.data)
    assert callable(box.on_message)
    assert "self.on_message" in inspect.getsource(pidbox.Pidbox.start)


def test_kombu_s_node_dispatches_through_the_table_we_swap_in() -> None:
    box = a_pidbox()
    control_step.guard(box.node, ControlPolicy())
    assert box.node.dispatch("ping") == {"ok": "pong"}
    assert box.node.dispatch("shutdown", {"msg": "bye"})["error"].startswith("refused: ")
    assert box.node.handle_message({"method": "hello", "arguments": {"from_node": "x"}})[
        "error"
    ].startswith("refused: ")


def test_the_guard_refuses_to_install_on_a_node_it_does_not_know() -> None:
    box = a_pidbox()
    box.node.handlers = dict(Panel.data)
    with pytest.raises(control_step.HookMissingError, match=r"Panel\.data"):
        control_step.guard(box.node, ControlPolicy())


def test_an_extra_command_the_worker_does_not_have_stops_the_worker_from_starting() -> None:
    with pytest.raises(ValueError, match=r"not a command to allow: \['pool_growth'\]"):
        control_step.guard(a_pidbox().node, ControlPolicy(extra=frozenset({"pool_growth"})))


def test_the_consumer_blueprint_lists_the_steps_we_replace_and_drop() -> None:
    celery_steps = list(Consumer.Blueprint.default_steps)
    assert control_step.CELERY_CONTROL in celery_steps
    assert set(control_step.WORKER_SYNC_STEPS) <= set(celery_steps)
    ours = control_step.GuardedBlueprint.default_steps
    assert control_step.GUARDED_CONTROL in ours and control_step.CELERY_CONTROL not in ours
    assert not set(control_step.WORKER_SYNC_STEPS) & set(ours)
    # Flower builds its views from task events and heartbeats.
    assert {
        "celery.worker.consumer.events:Events",
        "celery.worker.consumer.heart:Heart",
        "celery.worker.consumer.tasks:Tasks",
    } <= set(ours)


def test_the_worker_uses_our_blueprint_and_mingle_and_gossip_can_be_switched_off() -> None:
    from workers.edge.task import DeadLetteringConsumer

    assert DeadLetteringConsumer.Blueprint is control_step.GuardedBlueprint
    assert "without_mingle" in inspect.signature(Mingle.__init__).parameters
    assert "without_gossip" in inspect.signature(Gossip.__init__).parameters
    assert "self.box" in inspect.getsource(Control.__init__)


def test_every_event_task_runs_with_the_request_that_ignores_revocation() -> None:
    control_step.require_event_requests(app, event_task.DeadLetteringConsumer.event_request)
    events = [task for name, task in app.tasks.items() if not name.startswith("celery.")]
    assert events
    for task in events:
        assert issubclass(symbol_by_name(task.Request), event_task.EventRequest), task.name


def test_a_consumer_that_names_no_event_request_is_refused() -> None:
    with pytest.raises(control_step.HookMissingError, match="names no event request"):
        control_step.require_event_requests(app, None)


def test_the_consumer_names_the_request_that_ignores_revocation() -> None:
    assert event_task.DeadLetteringConsumer.event_request is event_task.EventRequest


def test_a_consumer_naming_a_request_that_honours_revocation_is_refused() -> None:
    with pytest.raises(control_step.HookMissingError, match="does not ignore revocation"):
        control_step.require_event_requests(app, Request)


def test_an_event_task_with_another_request_than_the_consumer_names_is_refused() -> None:
    class Stricter(event_task.EventRequest):
        pass

    with pytest.raises(control_step.HookMissingError, match=r"runs without .*Stricter"):
        control_step.require_event_requests(app, Stricter)


def test_celery_acts_on_a_revoked_id_only_through_the_request_we_replace() -> None:
    source = inspect.getsource(strategy.default)
    assert "symbol_by_name(task.Request)" in source and "req.revoked()" in source
    assert "self.revoked()" in inspect.getsource(Request.execute_using_pool)
    assert "request.terminate(" in inspect.getsource(celery_control._revoke)


class _Revoked(SimpleNamespace):
    id: str


def test_a_revoked_event_is_not_discarded_and_its_revocation_is_forgotten(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from celery.worker import state

    state.revoked.add("event-1")
    try:
        request: Any = _Revoked(id="event-1")
        assert event_task.EventRequest.revoked(request) is False
        assert "event-1" not in state.revoked
        assert "ignored" in caplog.text
    finally:
        state.revoked.discard("event-1")


def test_remote_termination_never_kills_an_event_s_handler() -> None:
    class Pool:
        def terminate_job(self, pid: int, signal: Any = None) -> None:
            raise AssertionError("the handler was killed")

    request: Any = _Revoked(id="event-2")
    event_task.EventRequest.terminate(request, Pool(), "SIGKILL")
