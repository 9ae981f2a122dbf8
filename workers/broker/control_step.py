"""The consumer's remote control, guarded by the control policy, and the consumer's steps.

Hooks of Celery's private code, each checked when the worker starts (and by a canary test):
- Celery's Control bootstep builds a kombu pidbox node whose command table is
  `celery.worker.control.Panel.data`; GuardedControl swaps that table for the guarded one;
- the consumer's blueprint lists Control by path; ours lists GuardedControl instead, and
  leaves out Mingle (its `hello` merges a neighbour's revoked ids) and Gossip (it consumes
  the event exchange and can make a worker call a task). Tasks requires Mingle, so the graph
  brings Mingle back: `without_mingle` keeps it from ever starting. Events and Heart stay:
  Flower builds its views from task events and heartbeats.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps
from celery.utils.imports import symbol_by_name
from celery.worker.consumer.consumer import Consumer
from celery.worker.consumer.control import Control
from celery.worker.control import Panel
from celery.worker.request import Request

from workers.broker.control_policy import (
    ADDRESSING,
    ControlPolicy,
    GuardedHandlers,
    addressing_problem,
    sender_of,
    unknown_commands,
)
from workers.runtime.root import runtime, state
from workers.settings import Settings

log = logging.getLogger(__name__)

CELERY_CONTROL = "celery.worker.consumer.control:Control"
GUARDED_CONTROL = "workers.broker.control_step:GuardedControl"
#: Screening and leases engaged once the connection is up, or the worker stops.
ENGAGED = "workers.broker.engaged:Engaged"
WORKER_SYNC_STEPS = ("celery.worker.consumer.mingle:Mingle", "celery.worker.consumer.gossip:Gossip")


class HookMissingError(RuntimeError):
    """The installed Celery no longer has what the remote-control guard hooks into."""


def policy_of(settings: Settings) -> ControlPolicy:
    return ControlPolicy(mode=settings.remote_control, extra=settings.remote_control_allow)


def guard(node: Any, policy: ControlPolicy) -> GuardedHandlers:
    """Swap the node's command table for the guarded one; refuse to run without it."""
    if node.handlers is not Panel.data:
        raise HookMissingError(
            "Celery's pidbox node no longer takes its commands from Panel.data: the "
            "remote-control guard cannot be installed, so the worker does not start"
        )
    unknown = unknown_commands(policy.extra, Panel.data)
    if unknown:
        raise ValueError(f"IMAGEGROUPS_REMOTE_CONTROL_ALLOW: not a command to allow: {unknown}")
    guarded = GuardedHandlers(
        Panel.data, policy, lambda c: state().counting.recorder.control_refused(c)
    )
    for command in [*guarded.refused_commands(), ADDRESSING]:
        state().counting.recorder.control_refused(command, 0)
    node.handlers = guarded
    return guarded


def require_event_requests(app: Any, required: type | None) -> None:
    """Every event task must run with the request that ignores revocation: `required`, the
    consumer's `event_request` (workers/edge/task.py), which names it."""
    if required is None:
        raise HookMissingError("the worker's consumer names no event request: not ours")
    if not issubclass(required, Request) or getattr(required, "revoked", None) is Request.revoked:
        raise HookMissingError(f"{required.__qualname__} does not ignore revocation")
    for name, task in app.tasks.items():
        if name.startswith("celery."):
            continue
        if not issubclass(symbol_by_name(task.Request), required):
            path = f"{required.__module__}:{required.__qualname__}"
            raise HookMissingError(f"task {name} runs without {path}")


class GuardedControl(Control):  # type: ignore[misc]
    """Celery's remote control, answering only what the policy allows."""

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        require_event_requests(c.app, getattr(c, "event_request", None))
        policy = policy_of(runtime().settings)
        guarded = guard(self.box.node, policy)
        deliver = self.box.on_message  # looked up by the box's start(), so ours is used

        def on_message(body: Any, message: Any) -> None:
            guarded.sender = sender_of(body)
            problem = addressing_problem(body)
            if problem is not None:  # no reply either: its address is what is refused
                log.warning("remote control message refused: %s, from %s", problem, guarded.sender)
                state().counting.recorder.control_refused(ADDRESSING)
                return
            deliver(body, message)

        self.box.on_message = on_message
        log.info("remote control: %s, answering %s", policy.mode, ", ".join(sorted(guarded)))


def _steps(celery_steps: list[str]) -> list[str]:
    if CELERY_CONTROL not in celery_steps:
        raise HookMissingError(f"Celery's consumer blueprint no longer lists {CELERY_CONTROL}")
    steps = [
        GUARDED_CONTROL if step == CELERY_CONTROL else step
        for step in celery_steps
        if step not in WORKER_SYNC_STEPS
    ]
    return [*steps, ENGAGED]


class GuardedBlueprint(Consumer.Blueprint):  # type: ignore[misc]
    """Celery's consumer steps, with the guarded remote control, no worker-to-worker sync, and
    the check that screening and leases are engaged (workers/broker/engaged.py)."""

    default_steps = _steps(list(Consumer.Blueprint.default_steps))

    def apply(self, parent: Any, **kwargs: Any) -> bootsteps.Blueprint:
        return super().apply(parent, **{**kwargs, "without_mingle": True, "without_gossip": True})
