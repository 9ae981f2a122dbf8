"""The `imagegroups` entry point: the argparse parser and the dispatch to each command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import TypeAlias, TypeVar

from kombu.exceptions import KombuError
from sqlalchemy.exc import SQLAlchemyError

from domain import DomainError, ImageGroupStatus, InvalidValueError
from workers.cli import dead_letter_commands as dl
from workers.cli import health, publish_commands, read_commands, write_commands
from workers.cli.output import CommandError, print_error
from workers.cli.runners import demo, simulate

Command = Callable[[argparse.Namespace], int]
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
N = TypeVar("N", int, float)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        for check in getattr(args, "usage_checks", ()):
            check(args)
    except SystemExit as stop:  # usage errors (2) and --help (0) end here
        return stop.code if isinstance(stop.code, int) else 2
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s"
    )
    command: Command = args.func
    try:
        return command(args)
    except (CommandError, DomainError, InvalidValueError) as exc:
        print_error(str(exc))
    except SQLAlchemyError as exc:
        print_error(f"database error: {_first_line(exc)}")
    except KombuError as exc:
        print_error(f"broker error: {type(exc).__name__}: {_first_line(exc)}")
    except OSError as exc:
        print_error(f"{type(exc).__name__}: {_first_line(exc)}")
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagegroups", description="Operate the image-group worker."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_db(commands)
    _add_publish(commands)
    _add_reads(commands)
    _add_writes(commands)
    _add_dead_letters(commands)
    _add_simulate(commands)
    _add_demo(commands)
    health_parser = commands.add_parser("health", help="database, broker, outbox, dead letters")
    _json_flag(health_parser)
    health_parser.set_defaults(func=health.health)
    return parser


def _add_db(commands: Subparsers) -> None:
    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    upgrade = db_commands.add_parser("upgrade", help="migrate DATABASE_URL to head")
    upgrade.set_defaults(func=_db_upgrade)


def _db_upgrade(_args: argparse.Namespace) -> int:
    from persistence.migrate import upgrade
    from workers.settings import get_settings

    upgrade(get_settings().database_url)
    print("database is at head")
    return 0


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
    source.add_argument("--image-group-id", metavar="ID")
    parsed.add_argument(
        "--role", action="append", metavar="ROLE[=IMAGE]", help="repeat; only with --image-group-id"
    )
    parsed.set_defaults(
        func=publish_commands.catalog_parsed, usage_checks=[_roles_go_with_id(parsed)]
    )


def _add_stage_finished(kinds: Subparsers) -> None:
    finished = kinds.add_parser("stage-finished", help="send a stage.finished event")
    _event_options(finished)
    finished.add_argument("--stage", required=True)
    finished.add_argument("--outcome", required=True, choices=["succeeded", "failed"])
    finished.add_argument("--image-group-id", metavar="ID")
    finished.add_argument("--attempt", type=_positive_int, metavar="N")
    finished.add_argument("--request-event-id", metavar="UUID")
    finished.add_argument("--detail", metavar="JSON", help="result_detail, a JSON object")
    finished.add_argument("--error-code")
    finished.add_argument("--error-summary")
    finished.set_defaults(func=publish_commands.stage_finished)


def _event_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--job-id", required=True, metavar="UUID")
    parser.add_argument("--correlation-id", metavar="UUID")
    _json_flag(parser)


def _roles_go_with_id(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], None]:
    """--role goes with --image-group-id only; argparse cannot say that by itself."""

    def check(args: argparse.Namespace) -> None:
        if args.catalog is not None and args.role:
            parser.error("--role cannot be used with --catalog")
        if args.image_group_id is not None and not args.role:
            parser.error("--image-group-id needs at least one --role")

    return check


def _add_reads(commands: Subparsers) -> None:
    status = commands.add_parser("status", help="one image group")
    status.add_argument("image_group_id", metavar="ID")
    _json_flag(status)
    status.set_defaults(func=read_commands.status)
    listing = commands.add_parser("list", help="image groups, newest first")
    listing.add_argument(
        "--status",
        type=str.upper,
        choices=[s.value for s in ImageGroupStatus],
        metavar="S",
        help="only groups in this status: " + ", ".join(s.value for s in ImageGroupStatus),
    )
    listing.add_argument("--limit", type=_positive_int, default=50, metavar="N")
    listing.add_argument("--offset", type=_non_negative_int, default=0, metavar="N")
    _json_flag(listing)
    listing.set_defaults(func=read_commands.list_groups)
    history = commands.add_parser("history", help="status changes of a group, oldest first")
    history.add_argument("image_group_id", metavar="ID")
    _json_flag(history)
    history.set_defaults(func=read_commands.history)


def _add_writes(commands: Subparsers) -> None:
    request = commands.add_parser("request", help="request the next stage of a group")
    request.add_argument("stage", choices=list(write_commands.REQUESTABLE))
    request.add_argument("image_group_id", metavar="ID")
    _json_flag(request)
    request.set_defaults(func=write_commands.request)
    cleanup = commands.add_parser("cleanup", help="mark a group CLEANED")
    cleanup.add_argument("image_group_id", metavar="ID")
    _json_flag(cleanup)
    cleanup.set_defaults(func=write_commands.cleanup)


def _add_dead_letters(commands: Subparsers) -> None:
    group = commands.add_parser("dead-letters", help="events the worker gave up on")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every dead letter")
    _json_flag(listing)
    listing.set_defaults(func=dl.list_letters)
    show = actions.add_parser("show", help="one dead letter with its body and traceback")
    show.add_argument("id", type=_positive_int)
    _json_flag(show)
    show.set_defaults(func=dl.show)
    replay = actions.add_parser("replay", help="send stored bodies again (same event_id)")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", nargs="*", type=_positive_int, default=[], metavar="ID")
    which.add_argument("--all", action="store_true", help="every letter that is still dead")
    _json_flag(replay)
    replay.set_defaults(func=dl.replay)
    discard = actions.add_parser("discard", help="give up on a dead letter for good")
    discard.add_argument("id", type=_positive_int)
    _json_flag(discard)
    discard.set_defaults(func=dl.discard)


def _add_simulate(commands: Subparsers) -> None:
    sim = commands.add_parser("simulate", help="stand-in pipeline answering stage requests")
    sim.add_argument("--fail-rate", type=_fraction, default=0.0, metavar="F")
    sim.add_argument("--delay", type=_non_negative_float, default=0.0, metavar="S")
    sim.add_argument("--seed", type=int, default=0, metavar="N")
    sim.add_argument("--concurrency", type=_positive_int, default=8, metavar="N")
    sim.set_defaults(func=simulate)


def _add_demo(commands: Subparsers) -> None:
    demo_parser = commands.add_parser("demo", help="the whole flow in one process, no servers")
    demo_parser.add_argument("--groups", type=_positive_int, default=10, metavar="N")
    demo_parser.set_defaults(func=demo)


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def _positive_int(text: str) -> int:
    value = _number(int, text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = _number(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = _number(float, text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
    return value


def _fraction(text: str) -> float:
    value = _number(float, text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _number(kind: Callable[[str], N], text: str) -> N:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
