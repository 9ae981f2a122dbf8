"""Large tables: the build-result drain on a database already holding `rows` rows in each of
the inbox, outbox, transition_history, event_deliveries and dead_letters, against a fresh one.

The pre-filled database is filled once; each repeat then drains on a new fresh database and on
the pre-filled one in turn (new groups each time), and the median of each is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.anchors import Ours, median, ours
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


def large(stack: Stack, n: int, rows: int, concurrency: int = 2, repeat: int = 1) -> Large:
    fresh: list[Ours] = []
    filled: list[Ours] = []
    with stack.database() as url:
        seconds = prefill(url, rows)
        tables = sizes(url)
        for _ in range(repeat):
            fresh.append(ours(stack, n, concurrency))
            filled.append(ours(stack, n, concurrency, url=url))
    return Large(
        rows=rows,
        fresh=median([o.build for o in fresh]),
        large=median([o.build for o in filled]),
        fresh_catalog=median([o.catalog for o in fresh]),
        large_catalog=median([o.catalog for o in filled]),
        prefill_seconds=seconds,
        tables=tables,
    )
