"""`imagegroups dead-letters`: list, show, replay and discard what the worker gave up on."""

from __future__ import annotations

import argparse
from typing import Any

from domain import DeadLetter, DeadLetterStatus
from workers import dead_letters
from workers.cli.output import CommandError, iso, print_error, print_fields, print_json, print_table
from workers.messages import EVENTS_QUEUE
from workers.root import Runtime, runtime

_LIST_HEADERS = ["ID", "STATUS", "TASK", "EVENT", "ERROR", "ATTEMPTS", "LAST FAILED"]


def summary(letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": letter.id,
        "task_name": letter.task_name,
        "event_id": letter.event_id,
        "error_type": letter.error_type,
        "error_message": letter.error_message,
        "attempts": letter.attempts,
        "status": letter.status.value,
        "first_failed_at": iso(letter.first_failed_at),
        "last_failed_at": iso(letter.last_failed_at),
    }


def detail(letter: DeadLetter) -> dict[str, Any]:
    return summary(letter) | {
        "body": letter.body,
        "content_type": letter.content_type,
        "traceback": letter.traceback,
        "replay_of": letter.replay_of,
        "replayed_at": iso(letter.replayed_at),
    }


def list_letters(args: argparse.Namespace) -> int:
    with runtime().new_uow() as uow:
        letters = uow.dead_letters.list()
    documents = [summary(letter) for letter in letters]
    if args.json:
        print_json(documents)
        return 0
    keys = ["id", "status", "task_name", "event_id", "error_type", "attempts", "last_failed_at"]
    print_table(_LIST_HEADERS, [[d[k] for k in keys] for d in documents])
    return 0


def show(args: argparse.Namespace) -> int:
    with runtime().new_uow() as uow:
        letter = uow.dead_letters.get(args.id)
    if letter is None:
        raise CommandError(f"no dead letter with id {args.id}")
    document = detail(letter)
    if args.json:
        print_json(document)
        return 0
    body, trace = document.pop("body"), document.pop("traceback")
    print_fields(document)
    print(f"\nbody:\n{body}\n\ntraceback:\n{trace or '-'}")
    return 0


def _send(task_name: str, args: list[Any], kwargs: dict[str, Any], headers: dict[str, Any]) -> str:
    from workers.celery import app

    result = app.send_task(task_name, args=args, kwargs=kwargs, headers=headers, queue=EVENTS_QUEUE)
    return str(result.id)


def replay(args: argparse.Namespace) -> int:
    rt = runtime()
    ids: list[int] = _dead_ids(rt) if args.all else list(dict.fromkeys(args.ids))
    results = [_replay_one(rt, letter_id) for letter_id in ids]
    _report_replays(results, as_json=args.json)
    return 1 if any(not r["replayed"] for r in results) else 0


def _replay_one(rt: Runtime, letter_id: int) -> dict[str, Any]:
    outcome: dict[str, Any] = {"id": letter_id, "replayed": False, "event_id": None}
    try:
        letter, task_id = dead_letters.replay(
            letter_id, new_uow=rt.new_uow, send=_send, now=rt.now()
        )
    except (dead_letters.ReplayRefusedError, LookupError) as exc:
        return outcome | {"task_id": None, "error": str(exc)}
    return outcome | {
        "replayed": True,
        "event_id": letter.event_id,
        "task_id": task_id,
        "error": None,
    }


def _dead_ids(rt: Runtime) -> list[int]:
    with rt.new_uow() as uow:
        return [
            letter.id
            for letter in uow.dead_letters.list(DeadLetterStatus.DEAD)
            if letter.id is not None
        ]


def _report_replays(results: list[dict[str, Any]], *, as_json: bool) -> None:
    if as_json:
        print_json(results)
        return
    if not results:
        print("no dead letters to replay")
    for result in results:
        if result["replayed"]:
            event_id = result["event_id"] or "-"
            print(f"replayed {result['id']} (event_id {event_id}, task {result['task_id']})")
        else:
            print_error(f"refused {result['id']}: {result['error']}")


def discard(args: argparse.Namespace) -> int:
    try:
        rt = runtime()
        letter = dead_letters.discard(args.id, new_uow=rt.new_uow, now=rt.now())
    except (dead_letters.ReplayRefusedError, LookupError) as exc:
        raise CommandError(str(exc)) from None
    if args.json:
        print_json(summary(letter) | {"status": DeadLetterStatus.DISCARDED.value})
    else:
        print(f"discarded {args.id} (event_id {letter.event_id or '-'})")
    return 0
