"""What a running worker knows about itself that the database cannot tell anyone else.

`imagegroups health` asks every worker over Celery's remote control (the `imagegroups_health`
inspect command, answered in workers/runtime/lifecycle.py) whether it can store dead letters
and reach the database right now. The process's one `WorkerHealth` is in its runtime
(workers/runtime/root.py, `state().health`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

COMMAND = "imagegroups_health"


@dataclass
class Check:
    """One capability of this worker process: working, or failing since when and why."""

    failing_since: datetime | None = None
    error: str | None = None
    failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def succeeded(self) -> None:
        with self._lock:
            self.failing_since, self.error, self.failures = None, None, 0

    def failed(self, error: BaseException) -> None:
        with self._lock:
            self.failing_since = self.failing_since or datetime.now(UTC)
            first = str(error).strip().splitlines()
            self.error = f"{type(error).__name__}: {first[0] if first else ''}".rstrip(": ")
            self.failures += 1

    def report(self) -> dict[str, Any]:
        with self._lock:
            since = None if self.failing_since is None else self.failing_since.isoformat()
            return {"ok": self.error is None, "error": self.error, "failing_since": since}


@dataclass
class WorkerHealth:
    dead_letter_store: Check = field(default_factory=Check)
    database: Check = field(default_factory=Check)
    #: Undecodable or malformed messages waiting for the dead-letter store to come back.
    held_messages: int = 0
    #: False while the database does not answer: the consumer takes no events then.
    taking_events: bool = True

    def report(self) -> dict[str, Any]:
        dead_letters = self.dead_letter_store.report() | {"held_messages": self.held_messages}
        return {
            "dead_letter_store": dead_letters,
            "database": self.database.report(),
            "taking_events": self.taking_events,
        }
