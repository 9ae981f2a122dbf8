"""A group's causal chain from its stored rows: a pure function, so it is tested without I/O.

Incoming events come from the inbox (outcome, causation_id, deliveries, duplicates) and the
dead-letter store (a replayed event's earlier deliveries are its letters' attempts); what the
inbox no longer holds (pruned after IMAGEGROUPS_INBOX_RETENTION) from the history, which keeps
every applied event, operator command and deadline with its cause. Follow-ons come from the
outbox (sent rows are pruned after IMAGEGROUPS_OUTBOX_RETENTION). Each entry names its cause
by causation_id, and `after_ms` is how long after that cause it happened.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from domain import DeadLetter, InboxRecord, OutboxMessage, Transition
from workers.cli.history_view import cause_document
from workers.cli.output import iso
from workers.messages import INCOMING

EVENT_TYPE_OF_TASK = {m.task: m.event_type for m in INCOMING}


@dataclass(frozen=True)
class TraceRows:
    """Everything stored about one group that its trace is made of."""

    image_group_id: str
    transitions: Sequence[Transition]
    inbox: Sequence[InboxRecord] = ()
    follow_ons: Sequence[OutboxMessage] = ()
    dead_letters: Sequence[DeadLetter] = ()


def trace_document(rows: TraceRows) -> dict[str, Any]:
    """`{image_group_id, events}`, events oldest first (docs/contract.md §4)."""
    letters = _letters_by_event(rows.dead_letters)
    entries = _handled(rows, letters) + [_sent(m) for m in rows.follow_ons]
    known = {e["event_id"] for e in entries}
    entries += [_dead(found) for key, found in letters.items() if key not in known]
    # A follow-on takes its place when it was written (its cause's commit): a worker marks
    # sends in batches, so its sent time may trail the publish by IMAGEGROUPS_OUTBOX_MARK_INTERVAL.
    entries.sort(
        key=lambda e: (e["written_at"] or e["at"], e["direction"] == "out", e["event_id"] or "")
    )
    at_of = {e["event_id"]: e["at"] for e in entries if e["event_id"] is not None}
    for entry in entries:
        cause_at = at_of.get(entry["causation_id"])
        if cause_at is not None:
            entry["after_ms"] = round((entry["at"] - cause_at).total_seconds() * 1000, 1)
        entry["at"], entry["written_at"] = iso(entry["at"]), iso(entry["written_at"])
    return {"image_group_id": rows.image_group_id, "events": entries}


def _handled(
    rows: TraceRows, letters: Mapping[str | None, list[DeadLetter]]
) -> list[dict[str, Any]]:
    """The incoming events and commands: the inbox's rows, then what only the history holds."""
    moves = _first_move_per_event(rows.transitions)
    entries = []
    for record in rows.inbox:
        found = letters.get(record.event_id, [])
        entry = _entry(record.event_id, "in", EVENT_TYPE_OF_TASK.get(record.task_name))
        entries.append(
            entry
            | _moved(moves.get(record.event_id))
            | {
                "causation_id": record.causation_id,
                "at": record.processed_at,
                "outcome": record.outcome,
                "deliveries": sum(d.attempts for d in found) + record.deliveries,
                "duplicates": record.duplicates,
                "dead_letters": [_letter(d) for d in found],
            }
        )
    held = {r.event_id for r in rows.inbox}
    for event_id, move in moves.items():
        if event_id not in held:
            found = letters.get(event_id, [])
            entries.append(
                _entry(event_id, "in", move.cause.event_type)
                | _moved(move)
                | {"at": move.at, "outcome": "applied", "dead_letters": [_letter(d) for d in found]}
            )
    return entries


def _moved(move: Transition | None) -> dict[str, Any]:
    """What the history says of the event: its cause, and the attempt it was on."""
    if move is None:
        return {}
    return {"cause": cause_document(move.cause), "attempt": move.cause.attempt}


def _sent(message: OutboxMessage) -> dict[str, Any]:
    body = message.body
    return _entry(message.event_id, "out", body.get("event_type")) | {
        "causation_id": body.get("causation_id"),
        "at": message.sent_at or message.created_at,
        "written_at": message.created_at,
        "outcome": "sent" if message.sent_at is not None else "pending",
        "attempt": (body.get("payload") or {}).get("attempt"),
    }


def _dead(found: list[DeadLetter]) -> dict[str, Any]:
    """An event that has only dead letters: it never reached an outcome the inbox keeps."""
    first = found[0]
    event_id = first.event_id  # None for a body without one (its key is the letter's id)
    return _entry(event_id, "in", EVENT_TYPE_OF_TASK.get(first.task_name)) | {
        "at": first.first_failed_at,
        "outcome": "dead-lettered",
        "deliveries": sum(d.attempts for d in found),
        "dead_letters": [_letter(d) for d in found],
    }


def _entry(event_id: str | None, direction: str, event_type: str | None) -> dict[str, Any]:
    """The contract's keys, then the project's own (one shape for every entry)."""
    return {
        "event_id": event_id,
        "direction": direction,
        "event_type": event_type,
        "causation_id": None,
        "at": None,
        "outcome": None,
        "deliveries": None,
        "after_ms": None,
        "written_at": None,
        "attempt": None,
        "duplicates": None,
        "cause": None,
        "dead_letters": [],
    }


def _letter(letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": letter.id,
        "status": letter.status.value,
        "replay_of": letter.replay_of,
        "error_type": letter.error_type,
        "attempts": letter.attempts,
        "first_failed_at": iso(letter.first_failed_at),
    }


def _first_move_per_event(transitions: Iterable[Transition]) -> dict[str, Transition]:
    """The first move each event or command caused (any others carry the same cause)."""
    first: dict[str, Transition] = {}
    for move in transitions:
        first.setdefault(move.event_id, move)
    return first


def _letters_by_event(letters: Iterable[DeadLetter]) -> dict[str | None, list[DeadLetter]]:
    """Letters per event_id, oldest first; a letter without an event_id stands alone."""
    by_event: dict[str | None, list[DeadLetter]] = {}
    for letter in sorted(letters, key=lambda d: d.id or 0):
        key = letter.event_id if letter.event_id is not None else f"#{letter.id}"
        by_event.setdefault(key, []).append(letter)
    return by_event
