"""Faults injected while a scenario runs: pool processes killed at random."""

from __future__ import annotations

import os
import random
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from tests.integration.stack import Process


class ChildKiller(threading.Thread):
    """Every `every` seconds, kill -9 one pool process of one worker, chosen at random."""

    def __init__(self, workers: Sequence[Process], *, every: float, seed: int) -> None:
        super().__init__(name="child-killer", daemon=True)
        self.workers = workers
        self.every = every
        self.random = random.Random(seed)
        self.kills = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.every):
            alive = [w for w in self.workers if w.popen.poll() is None and w.children()]
            if not alive:
                continue
            victim = self.random.choice(self.random.choice(alive).children())
            try:
                os.kill(victim, signal.SIGKILL)
                self.kills += 1
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


@contextmanager
def killing_children(
    workers: Sequence[Process], *, every: float, seed: int = 0
) -> Iterator[ChildKiller]:
    killer = ChildKiller(workers, every=every, seed=seed)
    killer.start()
    try:
        yield killer
    finally:
        killer.stop()
