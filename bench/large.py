"""Large tables: the build-result drain on a database already holding `rows` rows in each of
the inbox, outbox, transition_history, event_deliveries and dead_letters, against a fresh one."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.anchors import ours
from bench.drain import Drain
from bench.prefill import prefill, sizes
from bench.stack import Stack


@dataclass
class Large:
    rows: int
    fresh: Drain
    large: Drain
    fresh_catalog: Drain
    large_catalog: Drain
    prefill_seconds: float
    tables: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.large.rate / self.fresh.rate


def large(stack: Stack, n: int, rows: int, concurrency: int = 2) -> Large:
    """The same drain on a fresh database, then on a pre-filled one."""
    fresh = ours(stack, n, concurrency)
    with stack.database() as url:
        seconds = prefill(url, rows)
        tables = sizes(url)
        filled = ours(stack, n, concurrency, url=url)
    return Large(
        rows=rows,
        fresh=fresh.build,
        large=filled.build,
        fresh_catalog=fresh.catalog,
        large_catalog=filled.catalog,
        prefill_seconds=seconds,
        tables=tables,
    )
