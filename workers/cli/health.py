"""`imagegroups health`: database and broker reachable, outbox backlog, dead letters waiting."""

from __future__ import annotations

import argparse
from typing import Any

from sqlalchemy import text

from domain import DeadLetterStatus
from workers.bootstrap import runtime, utcnow
from workers.cli.output import print_json, print_table

BROKER_TIMEOUT_SECONDS = 3.0


def check_database() -> dict[str, Any]:
    try:
        with runtime().engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        return {"ok": False, "error": _one_line(exc)}
    return {"ok": True, "error": None}


def check_broker() -> dict[str, Any]:
    from workers.celery_app import app

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
    with runtime().new_uow() as uow:
        pending, oldest = uow.outbox.pending()
        waiting = uow.dead_letters.count(DeadLetterStatus.DEAD)
    age = None if oldest is None else round((utcnow() - oldest).total_seconds(), 3)
    return {"pending": pending, "oldest_unsent_age_seconds": age}, {"waiting": waiting}


def report() -> dict[str, Any]:
    database, broker = check_database(), check_broker()
    outbox: dict[str, Any] = {"pending": None, "oldest_unsent_age_seconds": None}
    letters: dict[str, Any] = {"waiting": None}
    if database["ok"]:
        try:
            outbox, letters = backlog()
        except Exception as exc:
            database = {"ok": False, "error": _one_line(exc)}
    return {
        "database": database,
        "broker": broker,
        "outbox": outbox,
        "dead_letters": letters,
        # Dead letters and a backlog are reported, not unhealthy: the worker can still work.
        "healthy": bool(database["ok"] and broker["ok"]),
    }


def health(args: argparse.Namespace) -> int:
    document = report()
    if args.json:
        print_json(document)
    else:
        _print_human(document)
    return 0 if document["healthy"] else 1


def _print_human(document: dict[str, Any]) -> None:
    rows = [
        ["database", _state(document["database"]), document["database"]["error"]],
        ["broker", _state(document["broker"]), document["broker"]["error"]],
        ["outbox", _count(document["outbox"]["pending"], "pending"), _age(document["outbox"])],
        ["dead letters", _count(document["dead_letters"]["waiting"], "waiting"), None],
    ]
    print_table(["CHECK", "STATE", "DETAIL"], rows)
    print(f"\n{'healthy' if document['healthy'] else 'UNHEALTHY'}")


def _state(check: dict[str, Any]) -> str:
    return "ok" if check["ok"] else "unreachable"


def _count(value: int | None, what: str) -> str:
    return "unknown" if value is None else f"{value} {what}"


def _age(outbox: dict[str, Any]) -> str | None:
    age = outbox["oldest_unsent_age_seconds"]
    return None if age is None else f"oldest unsent {age:.1f}s ago"


def _one_line(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0] if first else ''}".rstrip(": ")
