"""The `imagegroups dead-letters` sub-commands' arguments."""

from __future__ import annotations

import argparse
from typing import TypeAlias

from workers.cli import arguments as arg
from workers.cli.arguments import Parser
from workers.cli.dispatch import Commands

Subparsers: TypeAlias = "argparse._SubParsersAction[Parser]"
dl = Commands("workers.cli.dead_letter_commands")
#: `--status` choices; `waiting` is the store's status `dead` (see dead_letter_commands).
STATUSES = ("waiting", "replayed", "discarded", "all")


def add_dead_letters(commands: Subparsers) -> None:
    group = commands.add_parser("dead-letters", help="events the worker gave up on")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="dead letters with their reason, oldest first")
    listing.add_argument(
        "--status",
        type=str.lower,
        choices=STATUSES,
        default="waiting",
        help="only letters in this status: waiting (not replayed or discarded yet), replayed, "
        "discarded, or all",
    )
    arg.json_flag(listing)
    listing.set_defaults(func=dl.list_letters, needs_schema=True)
    show = actions.add_parser("show", help="one dead letter: body, traceback, replay lineage")
    arg.letter_id(show)
    arg.json_flag(show)
    show.set_defaults(func=dl.show, needs_schema=True)
    _add_replay(actions)
    discard = actions.add_parser("discard", help="give up on a dead letter for good")
    arg.letter_id(discard)
    arg.json_flag(discard)
    discard.set_defaults(func=dl.discard, needs_schema=True)


def _add_replay(actions: Subparsers) -> None:
    replay = actions.add_parser("replay", help="send stored bodies again (same event_id)")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "ids",
        nargs="*",
        type=arg.positive_int,
        default=[],
        metavar="ID",
        help="dead letters to replay (ids from `dead-letters list`)",
    )
    which.add_argument("--all", action="store_true", help="every letter that is still waiting")
    replay.add_argument(
        "--force",
        action="store_true",
        help="also send again a letter already replayed (refused otherwise)",
    )
    arg.json_flag(replay)
    replay.set_defaults(func=dl.replay, needs_schema=True)
