"""Operator commands: `request` the next stage of a group, and `cleanup` a group."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from domain import StageName
from workers import handlers, outbox
from workers.cli import arguments as arg
from workers.cli.output import print_json, print_warning
from workers.outbox import CeleryPublisher
from workers.runtime import root
from workers.runtime.root import execute

#: The stages an operator may request, as the command line spells them.
REQUESTABLE = {name: StageName(name) for name in arg.REQUESTABLE}


def request(args: argparse.Namespace) -> int:
    stage = REQUESTABLE[args.stage]
    return _run(args, lambda deps: handlers.request_stage(args.image_group_id, stage, deps=deps))


def cleanup(args: argparse.Namespace) -> int:
    return _run(args, lambda deps: handlers.cleanup(args.image_group_id, deps=deps))


def _event_app() -> Any:
    from workers.celery import app

    return app


def _runtime() -> root.Runtime:
    """The command's runtime, publishing on the event app (Celery loads on the first publish)."""
    root.install(CeleryPublisher(load_app=_event_app))
    return root.runtime()


def _run(args: argparse.Namespace, handle: Callable[[handlers.Deps], handlers.Result]) -> int:
    """The command end to end; a follow-on that cannot be sent now stays for the sweep."""
    with _publish_failures() as failures:
        done = execute(handle, _runtime())
    result, sent = done.result, done.sent
    unsent = [m.event_id for m in done.unsent]
    if unsent:
        why = f" ({failures[-1]})" if failures else ""
        print_warning(
            f"the follow-on event(s) {', '.join(unsent)} could not be published yet{why}; "
            "they stay in the outbox and a running worker sends them"
        )
    status = None if result.outcome.status is None else result.outcome.status.value
    follow_ons = [
        {"task_name": m.task_name, "event_id": m.event_id, "sent": i < sent}
        for i, m in enumerate(result.messages)
    ]
    attempt = _attempt(result)
    if args.json:
        print_json(
            {
                "image_group_id": result.outcome.image_group_id,
                "status": status,
                "attempt": attempt,
                "command_id": result.outcome.event_id,
                "follow_on": follow_ons,
            }
        )
        return 0
    started = "" if attempt is None else f" (attempt {attempt})"
    print(f"{result.outcome.image_group_id}: {status}{started}")
    for follow_on in follow_ons:
        state = "sent" if follow_on["sent"] else "pending in outbox"
        print(f"  {follow_on['task_name']} {follow_on['event_id']} ({state})")
    return 0


def _attempt(result: handlers.Result) -> int | None:
    """The attempt of the stage the command requested (its follow-on carries it); None when
    it requested none (cleanup)."""
    for message in result.messages:
        attempt = message.body.get("payload", {}).get("attempt")
        if isinstance(attempt, int):
            return attempt
    return None


class _Failures(logging.Handler):
    """Keeps the one-line reason of each failed publish the relay logs."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reasons: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None:
            lines = str(error).strip().splitlines()
            self.reasons.append(f"{type(error).__name__}: {lines[0] if lines else ''}".strip(": "))


@contextmanager
def _publish_failures() -> Iterator[list[str]]:
    """The relay logs a failed publish with its traceback, which belongs in a worker's log;
    here the command's own one-line warning tells it, so the record goes no further."""
    logger = logging.getLogger(outbox.__name__)
    captured, propagates = _Failures(), logger.propagate
    logger.addHandler(captured)
    logger.propagate = False
    try:
        yield captured.reasons
    finally:
        logger.propagate = propagates
        logger.removeHandler(captured)
