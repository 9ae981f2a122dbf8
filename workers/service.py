"""One event or operator command, end to end: its transaction, then its follow-ons.

Publishing happens after the commit and outside every lock; a follow-on that cannot be sent
now stays in the outbox, and the worker's sweep sends it (workers/outbox/relay.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from domain import OutboxMessage
from workers.handlers import Deps, Result
from workers.runtime.root import Runtime


@dataclass(frozen=True)
class Done:
    result: Result
    sent: int  # how many of result.messages were published now, in order

    @property
    def unsent(self) -> list[OutboxMessage]:
        return self.result.messages[self.sent :]


def execute(handle: Callable[[Deps], Result], rt: Runtime) -> Done:
    """Run a handler (one transaction), then publish what its transaction wrote to the outbox."""
    result = handle(rt.deps)
    return Done(result, rt.deliverer.deliver(result.messages))
