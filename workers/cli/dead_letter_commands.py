"""`imagegroups dead-letters`: list, show, replay and discard what the worker gave up on."""

from __future__ import annotations

import argparse
from typing import Any

from domain import DeadLetter, DeadLetterStatus
from workers.cli.output import CommandError, iso, print_error, print_fields, print_json, print_table
from workers.edge import dead_letters
from workers.messages import EVENTS_QUEUE
from workers.runtime.root import Runtime, runtime
from workers.safe_text import one_line, printable, printable_block

_LIST_HEADERS = ["ID", "STATUS", "TASK", "EVENT", "ERROR", "ATTEMPTS", "LAST FAILED", "REASON"]
#: How much of the error message the list shows: enough to tell two letters of a type apart.
REASON_WIDTH = 72
#: `--status` as an operator says it: a letter still `dead` waits for them.
STATUSES: dict[str, DeadLetterStatus | None] = {
    "waiting": DeadLetterStatus.DEAD,
    "replayed": DeadLetterStatus.REPLAYED,
    "discarded": DeadLetterStatus.DISCARDED,
    "all": None,
}


def summary(letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": letter.id,
        "task_name": letter.task_name,
        "event_id": letter.event_id,
        "error_type": letter.error_type,
        "error_message": letter.error_message,
        "attempts": letter.attempts,
        "status": letter.status.value,
        "replay_of": letter.replay_of,
        "first_failed_at": iso(letter.first_failed_at),
        "last_failed_at": iso(letter.last_failed_at),
    }


def detail(letter: DeadLetter, replayed_as: list[int]) -> dict[str, Any]:
    """`replayed_as`: the letters its replays left when they failed again (replay_of = it)."""
    return summary(letter) | {
        "body": letter.body,
        "content_type": letter.content_type,
        "traceback": letter.traceback,
        "replayed_at": iso(letter.replayed_at),
        "replayed_as": replayed_as,
    }


def reason(message: str) -> str:
    """The error message on one line of the list: whitespace runs as one space, then escaped."""
    return one_line(" ".join(message.split()), REASON_WIDTH)


def list_letters(args: argparse.Namespace) -> int:
    with runtime().new_uow() as uow:
        letters = uow.dead_letters.list(STATUSES[args.status])
    documents = [summary(letter) for letter in letters]
    if args.json:
        print_json(documents)
        return 0
    if not documents:
        print("no dead letters" + ("" if args.status == "all" else f" {args.status}"))
        return 0
    keys = ["id", "status", "task_name", "event_id", "error_type", "attempts", "last_failed_at"]
    rows = [[d[k] for k in keys] + [reason(d["error_message"])] for d in documents]
    print_table(_LIST_HEADERS, rows)
    return 0


def show(args: argparse.Namespace) -> int:
    with runtime().new_uow() as uow:
        letter = uow.dead_letters.get(args.id)
        replayed_as = [] if letter is None else list(uow.dead_letters.replays_of(args.id))
    if letter is None:
        raise CommandError(f"no dead letter with id {args.id}")
    document = detail(letter, replayed_as)
    if args.json:
        print_json(document)
        return 0
    body, trace = document.pop("body"), document.pop("traceback")
    document["replayed_as"] = ", ".join(str(i) for i in replayed_as) or None
    print_fields(document)
    print(f"\nbody:\n{_block(body)}\n\ntraceback:\n{_block(trace)}")
    return 0


def _block(text: str | None) -> str:
    """A stored text, each line indented, so none can pass for a field of the record."""
    if not text:
        return "  -"
    return "\n".join(f"  {line}" for line in printable_block(text.rstrip("\n")).split("\n"))


def _send(task_name: str, args: list[Any], kwargs: dict[str, Any]) -> str:
    from workers.celery import app

    result = app.send_task(task_name, args=args, kwargs=kwargs, queue=EVENTS_QUEUE)
    return str(result.id)


def replay(args: argparse.Namespace) -> int:
    rt = runtime()
    ids: list[int] = _dead_ids(rt) if args.all else list(dict.fromkeys(args.ids))
    results = [_replay_one(rt, letter_id, force=args.force) for letter_id in ids]
    _report_replays(results, as_json=args.json)
    return 1 if any(not r["replayed"] for r in results) else 0


def _replay_one(rt: Runtime, letter_id: int, *, force: bool) -> dict[str, Any]:
    outcome: dict[str, Any] = {"id": letter_id, "replayed": False, "event_id": None}
    try:
        if not force:
            _require_waiting(rt, letter_id)
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


def _require_waiting(rt: Runtime, letter_id: int) -> None:
    """A letter replayed once is sent again only when asked (--force): its event may well have
    been applied since. Two operators racing past this check only send a duplicate, which the
    inbox absorbs."""
    with rt.new_uow() as uow:
        letter = uow.dead_letters.get(letter_id)
    if letter is None or letter.status is DeadLetterStatus.DEAD:
        return  # a missing letter is reported by the replay itself
    hint = "; add --force to send it again" if letter.status is DeadLetterStatus.REPLAYED else ""
    raise dead_letters.ReplayRefusedError(_not_waiting(letter_id, letter.status) + hint)


def _not_waiting(letter_id: int, status: DeadLetterStatus) -> str:
    """The refusal text of replay, as workers/edge/dead_letters.py words that of discard."""
    return f"dead letter {letter_id} is {status.value}, not dead"


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
            event_id = printable(result["event_id"] or "-")
            print(f"replayed {result['id']} (event_id {event_id}, task {result['task_id']})")
        else:
            print_error(f"refused {result['id']}: {result['error']}")


def discard(args: argparse.Namespace) -> int:
    rt = runtime()
    try:  # refused as a replay is: "dead letter N is S, not dead"
        letter = dead_letters.discard(args.id, new_uow=rt.new_uow, now=rt.now())
    except (dead_letters.ReplayRefusedError, LookupError) as exc:
        raise CommandError(f"refused {args.id}: {exc}") from None
    if args.json:
        print_json(summary(letter) | {"status": DeadLetterStatus.DISCARDED.value})
    else:
        print(f"discarded {args.id} (event_id {printable(letter.event_id or '-')})")
    return 0
