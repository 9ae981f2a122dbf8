"""The retry schedule: exponential backoff with equal jitter, and how long it can last."""

from __future__ import annotations

import random


def ceiling(attempt: int, *, base: float, cap: float) -> float:
    """The longest wait after delivery `attempt` fails (the exponent bounded, so no overflow)."""
    return min(cap, base * 2.0 ** min(max(attempt - 1, 0), 64))


def backoff(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with equal jitter: half fixed, half random, never above `cap`."""
    top = ceiling(attempt, base=base, cap=cap)
    return top / 2 + (rng or random).uniform(0, top / 2)


def shortest_retry_span(attempts: int, *, base: float, cap: float) -> float:
    """The least time from an event's first delivery to its last (`attempts` deliveries)."""
    return sum(ceiling(n, base=base, cap=cap) / 2 for n in range(1, attempts))


def longest_retry_span(attempts: int, *, base: float, cap: float) -> float:
    """The most time from an event's first delivery to its last (`attempts` deliveries)."""
    return sum(ceiling(n, base=base, cap=cap) for n in range(1, attempts))
