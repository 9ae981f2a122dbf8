"""The `imagegroups` entry point: the argparse parser and the dispatch to each command.

The parser builds from the standard library and the pure domain alone: each command's module
(SQLAlchemy, Celery, pydantic) is imported when that command runs, so `--help` and a usage
error answer at once and a read command never loads Celery (bench/cli_latency.py measures it).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import TypeAlias

from domain import STAGE_ALIASES, ImageGroupStatus, StageName
from workers.cli import arguments as arg
from workers.cli.arguments import Parser, UsageError
from workers.cli.dispatch import Command, Commands, ending_process, run
from workers.cli.letter_parser import add_dead_letters
from workers.cli.output import print_error_document
from workers.cli.runners import demo, simulate
from workers.cli.trace_command import register as add_trace
from workers.safe_text import escape_handlers

Subparsers: TypeAlias = "argparse._SubParsersAction[Parser]"
STAGES = StageName.spellings()
STAGES_HELP = (
    ", ".join(s.value for s in StageName)
    + ", "
    + ", ".join(f"{alias} (= {stage.value})" for alias, stage in STAGE_ALIASES.items())
)


health = Commands("workers.cli.health")
prune_command = Commands("workers.cli.prune_command")
publish_commands = Commands("workers.cli.publish_commands")
read_commands = Commands("workers.cli.read_commands")
write_commands = Commands("workers.cli.write_commands")


def main(argv: list[str] | None = None) -> int:
    """Run one command; `argv` None means this process is the command (the console script)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        for check in getattr(args, "usage_checks", ()):
            check(args)
    except UsageError as usage:
        if "--json" in (sys.argv[1:] if argv is None else argv):
            print_error_document(usage.message, "UsageError")
        return 2
    except SystemExit as stop:  # --help (0) ends here
        return stop.code if isinstance(stop.code, int) else 2
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s"
    )
    escape_handlers(logging.getLogger())
    try:
        return run(args)
    finally:
        if argv is None:
            ending_process()


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="imagegroups", description="Operate the image-group worker.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_db(commands)
    _add_publish(commands)
    _add_reads(commands)
    add_trace(commands)
    _add_writes(commands)
    add_dead_letters(commands)
    _add_simulate(commands)
    _add_demo(commands)
    health_parser = commands.add_parser("health", help="database, broker, outbox, dead letters")
    arg.json_flag(health_parser)
    health_parser.set_defaults(func=health.health)
    prune = commands.add_parser("prune", help="delete what is past its retention, now")
    arg.json_flag(prune)
    prune.set_defaults(func=prune_command.prune, needs_schema=True)
    return parser


def _add_db(commands: Subparsers) -> None:
    db = commands.add_parser("db", help="database schema (Alembic revisions)")
    actions = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    upgrade = actions.add_parser("upgrade", help="migrate DATABASE_URL to head")
    upgrade.set_defaults(func=_db("upgrade"))
    current = actions.add_parser("current", help="the schema's revision in DATABASE_URL")
    current.set_defaults(func=_db("current"))
    history = actions.add_parser("history", help="this version's revisions, newest first")
    history.set_defaults(func=_db("history"))
    downgrade = actions.add_parser("downgrade", help="migrate DATABASE_URL down to a revision")
    downgrade.add_argument("revision", metavar="REV", help="a revision, or `base` for no schema")
    downgrade.set_defaults(func=_db("downgrade"))


def _db(name: str) -> Command:
    """A `db` command, imported when run: Alembic costs every other command a tenth of a second."""

    def run(args: argparse.Namespace) -> int:
        from workers.cli import db_commands

        command: Command = getattr(db_commands, name)
        return command(args)

    return run


def _add_publish(commands: Subparsers) -> None:
    publish = commands.add_parser("publish", help="send an incoming event")
    kinds = publish.add_subparsers(dest="event", required=True, metavar="EVENT")
    _add_catalog_parsed(kinds)
    _add_stage_finished(kinds)


def _add_catalog_parsed(kinds: Subparsers) -> None:
    parsed = kinds.add_parser("catalog-parsed", help="send a catalog.parsed event")
    _event_options(parsed)
    source = parsed.add_mutually_exclusive_group(required=True)
    source.add_argument("--catalog", metavar="FILE", help="read id and roles from an Omnia catalog")
    source.add_argument("--image-group-id", metavar="ID", help="the group's id, given by hand")
    parsed.add_argument(
        "--role",
        action="append",
        metavar="ROLE[=IMAGE]",
        help="a role and its image (default image ROLE.img); repeat; only with --image-group-id",
    )
    parsed.set_defaults(
        func=publish_commands.catalog_parsed, usage_checks=[_roles_go_with_id(parsed)]
    )


def _add_stage_finished(kinds: Subparsers) -> None:
    finished = kinds.add_parser("stage-finished", help="send a stage.finished event")
    _event_options(finished)
    finished.add_argument(
        "--stage", required=True, choices=STAGES, metavar="STAGE", help=f"one of {STAGES_HELP}"
    )
    finished.add_argument(
        "--outcome", required=True, choices=["succeeded", "failed"], help="what the stage came to"
    )
    finished.add_argument(
        "--image-group-id", metavar="ID", help="the job's group, checked against the job's"
    )
    finished.add_argument(
        "--attempt", type=arg.positive_int, metavar="N", help="the attempt this result answers"
    )
    finished.add_argument(
        "--request-event-id", type=arg.uuid_text, metavar="UUID", help="the request answered"
    )
    finished.add_argument(
        "--detail", type=arg.json_object, metavar="JSON", help="result_detail, a JSON object"
    )
    finished.add_argument("--error-code", metavar="CODE", help="why the stage failed, as a code")
    finished.add_argument("--error-summary", metavar="TEXT", help="why the stage failed, in words")
    finished.set_defaults(func=publish_commands.stage_finished)


def _event_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--job-id", required=True, type=arg.uuid_text, metavar="UUID", help="the pipeline job"
    )
    parser.add_argument(
        "--correlation-id",
        type=arg.uuid_text,
        metavar="UUID",
        help="carried into every follow-on event",
    )
    arg.json_flag(parser)
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print the bare event_id only, for a script: ID=$(imagegroups publish … -q)",
    )


def _roles_go_with_id(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], None]:
    """--role goes with --image-group-id only; argparse cannot say that by itself."""

    def check(args: argparse.Namespace) -> None:
        if args.catalog is not None and args.role:
            parser.error("--role cannot be used with --catalog")
        if args.image_group_id is not None and not args.role:
            parser.error("--image-group-id needs at least one --role")

    return check


def _add_reads(commands: Subparsers) -> None:
    status = commands.add_parser("status", help="one image group (and why it failed)")
    arg.group_id(status)
    arg.json_flag(status)
    status.set_defaults(func=read_commands.status, needs_schema=True)
    listing = commands.add_parser("list", help="image groups, newest first")
    listing.add_argument(
        "--status",
        type=str.upper,
        choices=[s.value for s in ImageGroupStatus],
        metavar="S",
        help="only groups in this status: " + ", ".join(s.value for s in ImageGroupStatus),
    )
    listing.add_argument(
        "--overdue",
        action="store_true",
        help="only groups whose requested stage is past its deadline",
    )
    listing.add_argument(
        "--limit", type=arg.positive_int, default=50, metavar="N", help="groups per page"
    )
    listing.add_argument(
        "--offset", type=arg.non_negative_int, default=0, metavar="N", help="groups to skip"
    )
    arg.json_flag(listing)
    listing.set_defaults(func=read_commands.list_groups, needs_schema=True)
    history = commands.add_parser("history", help="status changes of a group, oldest first")
    arg.group_id(history)
    arg.json_flag(history)
    history.set_defaults(func=read_commands.history, needs_schema=True)


def _add_writes(commands: Subparsers) -> None:
    request = commands.add_parser("request", help="request the next stage of a group")
    requestable = list(arg.REQUESTABLE)
    request.add_argument(
        "stage", choices=requestable, metavar="STAGE", help=f"one of {', '.join(requestable)}"
    )
    arg.group_id(request)
    arg.json_flag(request)
    request.set_defaults(func=write_commands.request, needs_schema=True)
    cleanup = commands.add_parser("cleanup", help="mark a group CLEANED")
    arg.group_id(cleanup)
    arg.json_flag(cleanup)
    cleanup.set_defaults(func=write_commands.cleanup, needs_schema=True)


def _add_simulate(commands: Subparsers) -> None:
    sim = commands.add_parser("simulate", help="stand-in pipeline answering stage requests")
    sim.add_argument(
        "--fail-rate",
        type=arg.fraction,
        default=0.0,
        metavar="F",
        help="share of requests answered `failed`, 0 to 1",
    )
    sim.add_argument(
        "--delay",
        type=arg.non_negative_float,
        default=0.0,
        metavar="S",
        help="seconds to wait before answering (each wait varies by half either way)",
    )
    sim.add_argument(
        "--seed", type=int, default=0, metavar="N", help="the same seed fails the same requests"
    )
    sim.add_argument(
        "--concurrency",
        type=arg.positive_int,
        default=8,
        metavar="N",
        help="requests answered at once (threads)",
    )
    sim.set_defaults(func=simulate)


def _add_demo(commands: Subparsers) -> None:
    demo_parser = commands.add_parser("demo", help="the whole flow in one process, no servers")
    demo_parser.add_argument(
        "--groups", type=arg.positive_int, default=10, metavar="N", help="image groups to run"
    )
    demo_parser.set_defaults(func=demo)
