"""Scaling: build results (and bare Celery, for the ratio) with 1, 2 and 4 pool processes in
one worker, and with 2 and 4 workers (separate processes, each its own consumer) on the same
queue."""

from __future__ import annotations

from dataclasses import dataclass

from bench.anchors import bare, ours
from bench.drain import Drain
from bench.stack import Stack

#: (workers, pool processes per worker)
CONFIGS = [(1, 1), (1, 2), (1, 4), (2, 1), (2, 2), (4, 1)]


@dataclass
class ScaleRow:
    workers: int
    concurrency: int
    bare: Drain
    catalog: Drain
    build: Drain

    @property
    def label(self) -> str:
        return f"{self.workers} worker{'s' if self.workers > 1 else ''} x {self.concurrency}"

    @property
    def ratio(self) -> float:
        return self.build.rate / self.bare.rate


def scaling(stack: Stack, n: int, configs: list[tuple[int, int]] | None = None) -> list[ScaleRow]:
    rows = []
    for workers, concurrency in configs or CONFIGS:
        base = bare(stack, n, concurrency, count=workers)
        pair = ours(stack, n, concurrency, count=workers)
        rows.append(ScaleRow(workers, concurrency, base, pair.catalog, pair.build))
    return rows
