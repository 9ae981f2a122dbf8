"""The `history` command's documents and lines: each move with its cause (docs/contract.md §4)."""

from __future__ import annotations

from typing import Any

from domain import ImageGroupStatus, Transition, TransitionCause
from workers.cli.output import iso, print_table


def _value(item: Any) -> Any:
    return getattr(item, "value", item)


def cause_document(cause: TransitionCause) -> dict[str, Any]:
    """Every key always there, null where it does not apply (`kind` null: recorded before
    causes were, and the migration could not tell)."""
    return {
        "kind": _value(cause.kind),
        "event_type": cause.event_type,
        "stage": _value(cause.stage),
        "attempt": cause.attempt,
        "outcome": _value(cause.outcome),
        "error_code": cause.error_code,
        "error_summary": cause.error_summary,
        "command": cause.command,
    }


def entry(transition: Transition) -> dict[str, Any]:
    return {
        "from_status": _value(transition.from_status),
        "to_status": transition.to_status.value,
        "event_id": transition.event_id,
        "at": iso(transition.at),
        "cause": cause_document(transition.cause),
    }


def cause_line(cause: dict[str, Any]) -> str:
    """One cell: `stage.finished: deploy failed, attempt 1, E_DEPLOY`, `operator: request
    deploy, attempt 2`, `deadline: deploy failed, attempt 1, STAGE_TIMEOUT`."""
    kind = cause["kind"]
    what = {"event": cause["event_type"], "operator": "operator", "deadline": "deadline"}
    head = what.get(kind) or "unknown"
    parts = [cause["command"] or " ".join(p for p in (cause["stage"], cause["outcome"]) if p)]
    if cause["attempt"] is not None:
        parts.append(f"attempt {cause['attempt']}")
    if cause["error_code"]:
        parts.append(cause["error_code"])
    detail = ", ".join(p for p in parts if p)
    return f"{head}: {detail}" if detail else head


def print_history(entries: list[dict[str, Any]]) -> None:
    """The moves with their causes, then each failure with its reason (kept for every
    attempt: a redeploy does not hide why the one before failed)."""
    rows = [
        [e["at"], e["from_status"], e["to_status"], e["event_id"], cause_line(e["cause"])]
        for e in entries
    ]
    print_table(["AT", "FROM", "TO", "EVENT", "CAUSE"], rows)
    failed = ImageGroupStatus.FAILED.value
    failures = [
        [e["at"], c["stage"], c["attempt"], c["error_code"], c["error_summary"]]
        for e in entries
        if e["to_status"] == failed
        for c in [e["cause"]]
    ]
    if failures:
        print()
        print_table(["FAILED AT", "STAGE", "ATTEMPT", "ERROR CODE", "ERROR SUMMARY"], failures)
