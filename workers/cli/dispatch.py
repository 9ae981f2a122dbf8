"""Running a parsed command: its module imported only now, its failure told as one line (and as
one JSON document under `--json`), and the process's end made quick."""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
from collections.abc import Callable

from domain import DomainError, InvalidValueError
from workers.cli.output import CommandError, print_error, print_error_document

Command = Callable[[argparse.Namespace], int]


class Commands:
    """A command module by name: `module.name` is a command that imports the module when run,
    so building the parser loads none of SQLAlchemy, Celery or pydantic."""

    def __init__(self, module: str) -> None:
        self.module = module

    def __getattr__(self, name: str) -> Command:
        def run(args: argparse.Namespace) -> int:
            command: Command = getattr(importlib.import_module(self.module), name)
            return command(args)

        run.__qualname__ = f"{self.module}.{name}"
        return run


def run(args: argparse.Namespace) -> int:
    command: Command = args.func
    try:
        if getattr(args, "needs_schema", False):
            from workers.cli.database import require_schema  # SQLAlchemy: loaded only when used

            require_schema()
        return command(args)
    except Exception as exc:
        message = failure(exc)
        if message is None:
            raise
        print_error(message)
        if getattr(args, "json", False):
            print_error_document(message, type(exc).__name__)
        return 1


def failure(exc: Exception) -> str | None:
    """What to tell the operator of a failure they can act on; None for a bug (a traceback).

    A database or broker error can only come from a library that was imported, so the
    classes are looked up where they were loaded instead of importing them for every command.
    """
    if isinstance(exc, (CommandError, DomainError, InvalidValueError)):
        return str(exc)
    if _is(exc, "sqlalchemy.exc", "SQLAlchemyError"):
        return f"database error: {first_line(exc)}"
    if _is(exc, "kombu.exceptions", "KombuError"):
        return f"broker error: {type(exc).__name__}: {first_line(exc)}"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {first_line(exc)}"
    return None


def _is(exc: Exception, module: str, name: str) -> bool:
    loaded = sys.modules.get(module)
    return loaded is not None and isinstance(exc, getattr(loaded, name))


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def ending_process() -> None:
    """The process ends after this command: close its database connections, then spare the
    interpreter its final garbage collections (a fifth of a second once SQLAlchemy is loaded);
    the operating system takes the memory back at once."""
    root = sys.modules.get("workers.runtime.root")
    if root is not None:
        root.reset()
    gc.freeze()
