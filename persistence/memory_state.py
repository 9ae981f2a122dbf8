"""What the in-memory fakes hold: one store shared by every unit of work on it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from domain import (
    CatalogReservation,
    DeadLetter,
    ImageGroup,
    InboxRecord,
    JobRecord,
    OutboxMessage,
    StageRecord,
    Transition,
)


class StateLock:
    """The lock of one store: every unit of work on it holds it from enter to exit, which
    makes them serialisable. A unit's private copy of the store shares it (deepcopy)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()

    def acquire(self) -> None:
        self._lock.acquire()

    def release(self) -> None:
        self._lock.release()

    def __deepcopy__(self, memo: dict[int, Any]) -> StateLock:
        return self


@dataclass
class MemoryState:
    groups: dict[str, ImageGroup] = field(default_factory=dict)
    reservations: dict[str, CatalogReservation] = field(default_factory=dict)
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    stages: dict[tuple[str, str], StageRecord] = field(default_factory=dict)
    history: list[Transition] = field(default_factory=list)
    inbox: dict[str, str] = field(default_factory=dict)  # event_id -> outcome
    inbox_records: dict[str, InboxRecord] = field(default_factory=dict)  # the whole rows
    outbox: dict[str, OutboxMessage] = field(default_factory=dict)
    leases: dict[str, datetime] = field(default_factory=dict)
    #: key -> (deliveries counted, the first's time, the copy holding the retry chain)
    deliveries: dict[str, tuple[int, datetime, str | None]] = field(default_factory=dict)
    dead_letters: dict[int, DeadLetter] = field(default_factory=dict)
    lock: StateLock = field(default_factory=StateLock, compare=False, repr=False)
