"""`imagegroups health`: database, broker, queues, outbox, dead letters, each worker's view.

Exit 0 only when nothing needs an operator: dead letters waiting, events waiting in
imagegroups.events that no live worker consumes, or a worker that cannot store dead letters
or reach its database, make it exit 1 with the reason. The pipeline's queues are reported
(follow-ons nobody takes show there) but are the pipeline's to drain, not a failure here.
"""

from __future__ import annotations

import argparse
from typing import Any

from domain import DeadLetterStatus
from workers.cli.database import require_schema
from workers.cli.output import CommandError, print_json, print_table
from workers.cli.queues import WATCHED, consumers_by_queue, read_queues, unknown
from workers.messages import EVENTS_QUEUE
from workers.runtime.root import COMMAND, runtime
from workers.safe_text import printable

BROKER_TIMEOUT_SECONDS = 3.0
#: How long to wait for the workers' answers (those that have not answered by then are left out).
WORKER_REPLY_SECONDS = 1.0


def check_database() -> dict[str, Any]:
    """Reachable and migrated to this code's head; never creates a missing SQLite file."""
    try:
        require_schema()
    except CommandError as exc:
        return {"ok": False, "error": str(exc)}
    except Exception as exc:
        return {"ok": False, "error": _one_line(exc)}
    return {"ok": True, "error": None}


def check_broker() -> dict[str, Any]:
    from workers.celery import app

    try:
        with app.connection_for_write(connect_timeout=BROKER_TIMEOUT_SECONDS) as conn:
            conn.ensure_connection(
                max_retries=1,
                interval_start=0.2,
                interval_step=0.2,
                timeout=BROKER_TIMEOUT_SECONDS,
            )
    except Exception as exc:
        return {"ok": False, "error": _one_line(exc)}
    return {"ok": True, "error": None}


def backlog() -> tuple[dict[str, Any], dict[str, Any]]:
    """Outbox rows not yet sent and dead letters waiting; None values when the DB is down."""
    rt = runtime()
    with rt.new_uow() as uow:
        pending, oldest = uow.outbox.pending()
        waiting = uow.dead_letters.count(DeadLetterStatus.DEAD)
    age = None if oldest is None else round((rt.now() - oldest).total_seconds(), 3)
    return {"pending": pending, "oldest_unsent_age_seconds": age}, {"waiting": waiting}


def ask_workers(limit: int | None = None) -> list[dict[str, Any]]:
    """Each running worker's own view: can it store dead letters and reach its database?
    With `limit`, the answer is in once that many workers have replied."""
    from workers.celery import app

    replies = (
        app.control.broadcast(COMMAND, reply=True, timeout=WORKER_REPLY_SECONDS, limit=limit) or []
    )
    found = [{"name": name} | state for reply in replies for name, state in reply.items()]
    return sorted(found, key=lambda worker: str(worker["name"]))


def ask_broker() -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The workers' own views, and each watched queue's depth and consumers. A worker that
    answers `active_queues` is live; the same number of health answers ends the wait."""
    from workers.celery import app

    listening = (
        app.control.broadcast("active_queues", reply=True, timeout=WORKER_REPLY_SECONDS) or []
    )
    workers = ask_workers(limit=len(listening) or None)
    consumers = consumers_by_queue(listening)
    with app.connection_for_write(connect_timeout=BROKER_TIMEOUT_SECONDS) as conn:
        return workers, read_queues(conn, consumers)


def problems(report: dict[str, Any]) -> list[str]:
    """Why the system is not healthy, one operator-readable line each; empty when it is."""
    found = [
        f"{name}: {report[name]['error']}"
        for name in ("database", "broker")
        if not report[name]["ok"]
    ]
    found += _unconsumed(report["queues"].get(EVENTS_QUEUE))
    waiting = report["dead_letters"]["waiting"]
    if waiting:
        found.append(
            f"{waiting} dead letter(s) waiting: see `imagegroups dead-letters list`, "
            "fix the cause, then replay or discard them"
        )
    for worker in report["workers"]:
        store, database = worker.get("dead_letter_store", {}), worker.get("database", {})
        if not store.get("ok", True):
            found.append(
                f"worker {worker['name']} cannot store dead letters since "
                f"{store.get('failing_since')}: {store.get('error')} "
                f"({store.get('held_messages', 0)} message(s) waiting for the store)"
            )
        if not database.get("ok", True):
            paused = "" if worker.get("taking_events", True) else " (it takes no events)"
            found.append(
                f"worker {worker['name']} cannot reach its database since "
                f"{database.get('failing_since')}: {database.get('error')}{paused}"
            )
    return found


def _unconsumed(events: dict[str, Any] | None) -> list[str]:
    """Events wait and nobody takes them: no worker says it consumes the queue, nor (on
    RabbitMQ) does the broker count a consumer."""
    if not events or not events["depth"] or events["consumers"] or events["broker_consumers"]:
        return []
    age = events["oldest_age_seconds"]
    oldest = "" if age is None else f", the oldest occurred {age:.1f}s ago"
    return [
        f"{events['depth']} event(s) waiting in {EVENTS_QUEUE}{oldest}, and no live worker "
        "consumes that queue: start one (`celery -A workers worker`)"
    ]


def report() -> dict[str, Any]:
    database, broker = check_database(), check_broker()
    outbox: dict[str, Any] = {"pending": None, "oldest_unsent_age_seconds": None}
    letters: dict[str, Any] = {"waiting": None}
    if database["ok"]:
        try:
            outbox, letters = backlog()
        except Exception as exc:
            database = {"ok": False, "error": _one_line(exc)}
    workers: list[dict[str, Any]] = []
    queues = {name: unknown() for name in WATCHED}
    if broker["ok"]:
        try:
            workers, queues = ask_broker()
        except Exception as exc:
            broker = {"ok": False, "error": _one_line(exc)}
    document = {
        "database": database,
        "broker": broker,
        "queues": queues,
        "outbox": outbox,
        "dead_letters": letters,
        "workers": workers,
    }
    found = problems(document)
    return document | {"problems": found, "healthy": not found}


def health(args: argparse.Namespace) -> int:
    document = report()
    if args.json:
        print_json(document)
    else:
        _print_human(document)
    return 0 if document["healthy"] else 1


def _print_human(document: dict[str, Any]) -> None:
    rows = [
        ["database", _state(document["database"]), _short(document["database"]["error"])],
        ["broker", _state(document["broker"]), _short(document["broker"]["error"])],
        *([f"queue {name}", *_queue_cells(q)] for name, q in document["queues"].items()),
        ["outbox", _count(document["outbox"]["pending"], "pending"), _age(document["outbox"])],
        ["dead letters", _count(document["dead_letters"]["waiting"], "waiting"), None],
    ]
    rows.extend([f"worker {w['name']}", _worker_state(w), None] for w in document["workers"])
    print_table(["CHECK", "STATE", "DETAIL"], rows)
    print(f"\n{'healthy' if document['healthy'] else 'UNHEALTHY'}")
    for problem in document["problems"]:
        print(f"  - {printable(problem)}")  # names and errors come from broker replies


def _queue_cells(queue: dict[str, Any]) -> list[str | None]:
    if queue["depth"] is None:
        return ["unknown", None]
    who = queue["consumers"] or (
        [f"{queue['broker_consumers']} on the broker"] if queue["broker_consumers"] else []
    )
    detail = [f"consumed by {', '.join(who)}" if who else "no live consumer"]
    if queue["oldest_age_seconds"] is not None:
        detail.insert(0, f"oldest occurred {queue['oldest_age_seconds']:.1f}s ago")
    return [f"{queue['depth']} waiting", _short("; ".join(detail))]


def _short(text: str | None, width: int = 60) -> str | None:
    """The table's detail column; the full reason is printed under the table."""
    return text if text is None or len(text) <= width else text[: width - 1] + "…"


def _worker_state(worker: dict[str, Any]) -> str:
    checks = (worker.get("dead_letter_store", {}), worker.get("database", {}))
    return "ok" if all(c.get("ok", True) for c in checks) else "failing"


def _state(check: dict[str, Any]) -> str:
    return "ok" if check["ok"] else "failing"


def _count(value: int | None, what: str) -> str:
    return "unknown" if value is None else f"{value} {what}"


def _age(outbox: dict[str, Any]) -> str | None:
    age = outbox["oldest_unsent_age_seconds"]
    return None if age is None else f"oldest unsent {age:.1f}s ago"


def _one_line(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0] if first else ''}".rstrip(": ")
