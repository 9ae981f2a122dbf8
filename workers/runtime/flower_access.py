"""Flower's access rules: it needs authentication and listens on loopback unless told otherwise."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from workers.settings import get_settings

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "127.0.0.1"
OPT_OUT = "IMAGEGROUPS_FLOWER_UNAUTHENTICATED=true"
NO_AUTH = (
    "flower: refusing to start without authentication: set FLOWER_BASIC_AUTH=user:password "
    f"(or Flower's --auth with an OAuth provider), or {OPT_OUT} to serve it open on purpose"
)
BAD_BASIC_AUTH = (
    "flower: refusing to start: every FLOWER_BASIC_AUTH entry must be user:password "
    "with neither part empty (several entries are separated by commas)"
)


def serving_flower() -> bool:
    """True while `celery -A workers flower` imports the app, before Flower reads its options."""
    context = click.get_current_context(silent=True)
    return context is not None and context.invoked_subcommand == "flower"


def install() -> None:
    """Check Flower's options once it has read them, when this process is about to serve it."""
    if not serving_flower():
        return
    from tornado.options import options  # Flower's option registry; only Flower needs it

    options.add_parse_callback(_FinalOptions(options))


class _FinalOptions:
    """Runs `enforce` on the options Flower will really use.

    Flower (flower/command.py, apply_options) parses its command line, which runs the parse
    callbacks, and only when its config file exists reads it and parses the command line
    again. So with a config file the first run sees options the file may still change.
    """

    def __init__(self, options: Any) -> None:
        self.options = options
        self.runs = 0

    def __call__(self) -> None:
        self.runs += 1
        if self.runs == 1 and Path(self.options.conf).is_file():
            return
        enforce(self.options, open_allowed=get_settings().flower_unauthenticated)


def enforce(options: Any, *, open_allowed: bool) -> None:
    """Default the address to loopback; refuse to serve without authentication (SystemExit)."""
    if not options.address and not options.unix_socket:
        # Flower's own default, "", would listen on every interface.
        options.address = DEFAULT_ADDRESS
    problem = auth_problem(options.basic_auth, options.auth)
    if problem is None:
        return
    if problem == NO_AUTH and open_allowed:
        log.warning(
            "Flower is serving without authentication (%s): whoever reaches %s:%s sees every "
            "event's arguments",
            OPT_OUT,
            options.address or options.unix_socket,
            options.port,
        )
        return
    raise SystemExit(problem)


def auth_problem(basic_auth: list[str] | None, oauth: str) -> str | None:
    """Why these settings leave Flower open or unusable, or None when they protect it."""
    if oauth:
        return None  # Flower checks the e-mail pattern and the provider itself
    if not basic_auth:
        return NO_AUTH
    for entry in basic_auth:
        user, _, password = entry.partition(":")
        if not user or not password:
            return BAD_BASIC_AUTH
    return None
