"""Argument types, shared arguments and help for the parser: a malformed value exits 2."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

N = TypeVar("N", int, float)

#: The stages an operator may request, as the command line spells them (StageName values).
REQUESTABLE = ("deploy", "pxe-boot", "validate")


class UsageError(SystemExit):
    """A usage error (exit status 2), with argparse's message kept for a `--json` document."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message


class HelpFormatter(argparse.HelpFormatter):
    """Appends `(default: …)` to an option's help when it has a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        # By identity: 0 and 0.0 are defaults worth showing, though they equal False.
        unshown = default is None or default is False or default is argparse.SUPPRESS
        if "%(default)" in text or unshown or default == []:
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """Every parser and sub-parser of `imagegroups` shows defaults the same way."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """As argparse prints it (usage, then the message, on stderr), raised as UsageError."""
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise UsageError(message)


def json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def group_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image_group_id", metavar="ID", help="the image group's id")


def letter_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "id", type=positive_int, help="the dead letter's id (from `dead-letters list`)"
    )


def uuid_text(text: str) -> str:
    """A UUID, in its canonical lowercase form (what the envelope carries)."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UUID: {text!r}") from None


def json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {type(value).__name__}")
    return value


def positive_int(text: str) -> int:
    value = _number(int, text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(float, text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of at least 0, got {text}")
    return value


def fraction(text: str) -> float:
    value = _number(float, text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _number(kind: Callable[[str], N], text: str) -> N:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
