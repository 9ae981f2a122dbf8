"""Which remote-control commands the event worker obeys: a publisher is not an operator.

Celery's remote control travels over the same broker as the events, and it names no sender,
so anyone who can publish an event could shut every worker down, shrink its pool, change its
limits, or revoke an event before it arrives. By default the worker answers only what the
product and Flower's read-only views ask for; everything else is refused with a reply,
logged and counted. `IMAGEGROUPS_REMOTE_CONTROL=full` gives an operator Celery's whole set
back (bar the worker-to-worker sync, which is switched off), and
`IMAGEGROUPS_REMOTE_CONTROL_ALLOW` adds single commands. Revocation never drops an event
whatever the policy (workers/edge/task.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger(__name__)

Mode = Literal["read-only", "full"]
Handler = Callable[..., Any]
#: Told of each refusal, with the command's label (a name Celery knows, or UNKNOWN).
OnRefused = Callable[[str], None]

#: `imagegroups health` (ping, our own health report) and Flower's worker pages
#: (flower/inspector.py: Inspector.inspect_methods) ask these; each only reads.
READ_ONLY = frozenset(
    {
        "ping",
        "imagegroups_health",
        "stats",
        "active_queues",
        "registered",
        "scheduled",
        "active",
        "reserved",
        "revoked",
        "conf",
        # Flower sends it every few seconds; the worker sends task events from the start
        # anyway (celeryconfig.py), so it changes nothing. Its opposite is refused.
        "enable_events",
    }
)
#: Worker-to-worker sync (Mingle's `hello` merges the sender's revoked ids, Gossip's
#: `election` makes a worker call a task). Those consumer steps are off in this worker,
#: so these are refused in every mode.
WORKER_SYNC = frozenset({"hello", "election"})
#: The metrics label of a command Celery does not know (labels must stay few).
UNKNOWN = "(unknown)"
#: The label of a message refused for its addressing (pattern, matcher, reply address).
ADDRESSING = "(addressing)"


@dataclass(frozen=True)
class ControlPolicy:
    mode: Mode = "read-only"
    extra: frozenset[str] = frozenset()

    def allows(self, command: str) -> bool:
        if command in WORKER_SYNC:
            return False
        return self.mode == "full" or command in READ_ONLY or command in self.extra

    def reason(self, command: str) -> str:
        # !r: the name is the sender's text; a reply or log line must not carry its controls.
        if command in WORKER_SYNC:
            return f"refused: {command!r} is worker-to-worker sync, which this worker does not run"
        return (
            f"refused: remote-control command {command[:64]!r} is not allowed on this worker "
            f"(IMAGEGROUPS_REMOTE_CONTROL={self.mode}; see the runbook: remote control)"
        )


class GuardedHandlers(Mapping[str, Handler]):
    """A pidbox node's command table that hands out a refusal for every command not allowed.

    `commands` is Celery's own table (read live: commands registered later still count).
    A refused command, known or not, gets a reply `{"error": "refused: ..."}`.
    """

    def __init__(
        self, commands: Mapping[str, Handler], policy: ControlPolicy, on_refused: OnRefused
    ) -> None:
        self._commands = commands
        self.policy = policy
        self._on_refused = on_refused
        #: Who sent the message being handled, as far as it says (set per message).
        self.sender = "unknown"

    def __getitem__(self, command: str) -> Handler:
        if not isinstance(command, str):  # the body's `method`: any JSON value
            return self._refusal(repr(command)[:64])
        if self.policy.allows(command) and command in self._commands:
            return self._commands[command]
        return self._refusal(command)

    def __contains__(self, command: object) -> bool:
        return (
            isinstance(command, str) and command in self._commands and self.policy.allows(command)
        )

    def __iter__(self) -> Iterator[str]:
        return iter([name for name in self._commands if self.policy.allows(name)])

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def refused_commands(self) -> list[str]:
        """Celery's commands this policy refuses (for counters that start at zero)."""
        return sorted(name for name in self._commands if not self.policy.allows(name))

    def _refusal(self, command: str) -> Handler:
        label = command if command in self._commands else UNKNOWN
        reason = self.policy.reason(command)

        def refuse(_state: Any, **_arguments: Any) -> dict[str, str]:
            log.warning("%s, from %s", reason, self.sender)
            self._on_refused(label)
            return {"error": reason}

        return refuse


#: The exchange Celery's replies go to; a reply routed anywhere else would make every worker
#: publish into a queue of the sender's choosing (an event queue, say).
REPLY_EXCHANGE = "reply.celery.pidbox"
_LONGEST_ADDRESS = 256


def addressing_problem(body: Any) -> str | None:
    """Why a control message's addressing must not reach kombu, or None.

    kombu matches a broadcast's `pattern` against the worker's name with the `matcher` the
    sender picks, before any command is looked up: a regular expression that backtracks for
    ever would hang the consumer's loop (no acks, no lease renewals). Only a short glob is
    let through, and replies only to Celery's reply exchange.
    """
    if not isinstance(body, dict):
        return None  # kombu refuses it itself
    pattern, matcher = body.get("pattern"), body.get("matcher")
    addressed = pattern is not None or matcher is not None
    short_glob = matcher == "glob" and isinstance(pattern, str) and len(pattern) <= _LONGEST_ADDRESS
    if addressed and not short_glob:
        return f"addressing by matcher {str(matcher)[:32]!r} is refused (only a short glob)"
    reply_to = body.get("reply_to")
    if reply_to is not None:
        if not isinstance(reply_to, dict) or reply_to.get("exchange") != REPLY_EXCHANGE:
            return f"replies go only to the exchange {REPLY_EXCHANGE!r}"
        key = reply_to.get("routing_key")
        if not isinstance(key, str) or len(key) > _LONGEST_ADDRESS:
            return "a reply's routing key must be a short string"
    return None


def sender_of(body: Any) -> str:
    """What a control message says of its sender: only the mailbox its reply goes to (a
    broadcast without a reply names nothing). Celery's messages carry no sender identity."""
    reply_to = body.get("reply_to") if isinstance(body, dict) else None
    if isinstance(reply_to, dict) and isinstance(reply_to.get("routing_key"), str):
        return f"reply-to {reply_to['routing_key'][:64]!r}"
    return "unknown (no reply address)"


def unknown_commands(extra: frozenset[str], commands: Mapping[str, Handler]) -> list[str]:
    """Names in IMAGEGROUPS_REMOTE_CONTROL_ALLOW this worker cannot allow: not one of its
    commands, or worker-to-worker sync (whose steps are off)."""
    return sorted(name for name in extra if name not in commands or name in WORKER_SYNC)
