"""`imagegroups trace GROUP [--json]`: a group's causal chain, events in and follow-ons out.

Only the standard library is imported here: the parser is built for every command, and the
database is loaded when `trace` runs (workers/cli/main.py keeps `--help` fast).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from workers.cli import arguments as arg

if TYPE_CHECKING:
    from domain import ImageGroup
    from persistence.uow import StoreUnitOfWork
    from workers.cli.trace_model import TraceRows

DESCRIPTION = """\
The group's causal chain, oldest first: every incoming event with its outcome (applied,
duplicate, stale, dead-lettered) and deliveries, every operator command and deadline, every
follow-on sent with its event_id and when it was sent; each linked to its cause by
causation_id, with the milliseconds between them, and dead letters with their replays.

Retention limits what can be shown: the inbox keeps an event for IMAGEGROUPS_INBOX_RETENTION
(7 days by default; older applied events still show, from the history, without their
deliveries, and older duplicate or stale ones are gone), and a sent follow-on is kept for
IMAGEGROUPS_OUTBOX_RETENTION (a day by default)."""


def register(commands: Any) -> None:
    """Add `trace` to the `imagegroups` parser (its module loads only when it runs)."""
    parser = commands.add_parser(
        "trace",
        help="a group's causal chain: events in, follow-ons out",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    arg.group_id(parser)
    arg.json_flag(parser)
    parser.set_defaults(func=trace, needs_schema=True)


def trace(args: argparse.Namespace) -> int:
    from domain import ImageGroupId
    from workers.cli.output import print_json
    from workers.cli.read_commands import existing_group
    from workers.cli.trace_model import trace_document
    from workers.runtime.root import runtime

    group_id = ImageGroupId(args.image_group_id)
    with runtime().new_uow() as uow:
        group = existing_group(uow, group_id)
        document = trace_document(read_rows(uow, group))
    if args.json:
        print_json(document)
    else:
        print_timeline(document, group.job_id)
    return 0


def read_rows(uow: StoreUnitOfWork, group: ImageGroup) -> TraceRows:
    """The rows of one group's trace, each query on an index (persistence/repositories.py)."""
    from domain import STAGE_FLOW
    from workers.cli.trace_model import TraceRows

    transitions = uow.history.list_for_group(group.id)
    moved_by = list(dict.fromkeys(t.event_id for t in transitions))
    inbox = uow.trace.inbox(group.job_id, moved_by)
    # A follow-on is written with the move into a running status, at that move's time.
    running = {flow.running for flow in STAGE_FLOW.values()}
    written = [t.at for t in transitions if t.to_status in running]
    handled = list(dict.fromkeys([*moved_by, *(r.event_id for r in inbox)]))
    return TraceRows(
        image_group_id=group.id.value,
        transitions=transitions,
        inbox=inbox,
        follow_ons=uow.trace.follow_ons(group.id, written),
        dead_letters=uow.trace.dead_letters(group.job_id, handled),
    )


def print_timeline(document: dict[str, Any], job_id: str) -> None:
    """One line per entry, oldest first; ids shortened to 8 characters (`--json` has them
    whole), AFTER the milliseconds since the entry named in CAUSED BY."""
    from workers.cli.output import print_table
    from workers.safe_text import printable

    events = document["events"]
    print(f"trace of {printable(document['image_group_id'])} (job {job_id}), oldest first")
    print()
    rows = [
        [
            e["at"],
            e["direction"],
            describe(e),
            _outcome(e),
            e["deliveries"],
            None if e["after_ms"] is None else f"+{e['after_ms']:g} ms",
            _short(e["causation_id"]),
            _short(e["event_id"]),
        ]
        for e in events
    ]
    header = ["AT", "DIR", "EVENT", "OUTCOME", "DELIVERIES", "AFTER", "CAUSED BY", "EVENT ID"]
    print_table(header, rows)
    replays = [_lineage(e) for e in events if e["dead_letters"]]
    if replays:
        print("\ndead letters (oldest first, with what became of each):")
        for line in replays:
            print(f"  {printable(line)}")


def describe(entry: dict[str, Any]) -> str:
    from workers.cli.history_view import cause_line

    if entry["cause"] is not None:
        return cause_line(entry["cause"])
    what = entry["event_type"] or "(no event type)"
    if entry["direction"] == "out" and entry["attempt"] is not None:
        return f"{what}, attempt {entry['attempt']}"
    return str(what)


def _outcome(entry: dict[str, Any]) -> str:
    duplicates = entry["duplicates"]
    if duplicates:
        return f"{entry['outcome']} (+{duplicates} duplicate{'s' if duplicates > 1 else ''})"
    return str(entry["outcome"])


def _lineage(entry: dict[str, Any]) -> str:
    steps = []
    for letter in entry["dead_letters"]:
        origin = "" if letter["replay_of"] is None else f", a replay of {letter['replay_of']}"
        steps.append(
            f"dead letter {letter['id']} ({letter['error_type']} after {letter['attempts']} "
            f"deliveries{origin}): {letter['status']}"
        )
    if entry["outcome"] != "dead-lettered":
        steps.append(str(entry["outcome"]))
    return f"{_short(entry['event_id']) or '(no event_id)'}  " + " -> ".join(steps)


def _short(event_id: str | None) -> str | None:
    return None if event_id is None else event_id[:8]
