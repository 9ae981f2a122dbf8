"""What the in-memory fakes hold: one store shared by every unit of work on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from domain import (
    CatalogReservation,
    DeadLetter,
    ImageGroup,
    JobRecord,
    OutboxMessage,
    StageRecord,
    Transition,
)


@dataclass
class MemoryState:
    groups: dict[str, ImageGroup] = field(default_factory=dict)
    reservations: dict[str, CatalogReservation] = field(default_factory=dict)
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    stages: dict[tuple[str, str], StageRecord] = field(default_factory=dict)
    history: list[Transition] = field(default_factory=list)
    inbox: dict[str, str] = field(default_factory=dict)
    outbox: dict[str, OutboxMessage] = field(default_factory=dict)
    leases: dict[str, datetime] = field(default_factory=dict)
    deliveries: dict[str, tuple[int, datetime]] = field(default_factory=dict)
    dead_letters: dict[int, DeadLetter] = field(default_factory=dict)
