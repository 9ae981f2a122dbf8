"""What becomes of a delivery: done, retried after a delay, requeued, or dead-lettered.

Pure policy, from plain inputs: no Celery, kombu or SQL here, so that every rule is tested
in-process as a decision table (tests/unit/test_decide.py). The task and the consumer only
translate the decision (workers/edge/task.py: the task and the consumer). The retry schedule
lives here too: exponential backoff with equal jitter, and how long it can last.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

#: How long the consumer leaves the dead-letter store alone after it failed: doubling.
STORE_PAUSE_FIRST = 1.0
STORE_PAUSE_CAP = 30.0


class Failure(enum.Enum):
    """Why a delivery did not end well, as far as the policy cares."""

    TRANSIENT = "transient"  # may pass on a later delivery: the database or broker was away
    PERMANENT = "permanent"  # fails the same way every time: an invalid event, a domain error
    EXHAUSTED = "exhausted"  # delivered more often than the attempt limit allows


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    backoff_base: float
    backoff_cap: float


@dataclass(frozen=True)
class Done:
    """Acknowledge: the delivery ended with an outcome."""


@dataclass(frozen=True)
class Retry:
    """Send the event again after `delay` seconds, as the next attempt."""

    delay: float


@dataclass(frozen=True)
class Requeue:
    """Give the message back to its queue after `delay` seconds; it has no attempt count."""

    delay: float


@dataclass(frozen=True)
class DeadLetter:
    """Store it in the dead-letter store, then acknowledge it."""

    reason: str


Decision = Done | Retry | Requeue | DeadLetter


def decide(
    failure: Failure | None,
    *,
    attempt: int,
    policy: RetryPolicy,
    store_failures: int = 0,
    can_retry: bool = True,
    rng: random.Random | None = None,
) -> Decision:
    """The decision for delivery `attempt` (1 for the first) that ended in `failure`.

    `store_failures`: how often in a row the dead-letter store has just failed (0: it is
    reachable). `can_retry`: whether the delivery can be sent again as a next attempt (a
    task can; a message the consumer refused never became one, so it is requeued instead).
    A dead letter is never lost: while the store is away, the event waits.
    """
    if failure is None:
        return Done()
    if failure is Failure.TRANSIENT and attempt < policy.max_attempts and can_retry:
        return Retry(_backoff(attempt, policy, rng))
    if store_failures == 0:
        return DeadLetter(_reason(failure, attempt, policy))
    if can_retry:
        return Retry(_backoff(attempt, policy, rng))
    return Requeue(store_pause(store_failures))


def past_the_limit(attempt: int, policy: RetryPolicy) -> str | None:
    """Why delivery `attempt` is given up on before it is handled, or None: it may run.

    Retries and redeliveries (a worker lost) count alike: a message that kills its worker
    must not loop for ever."""
    if attempt > policy.max_attempts:
        return f"delivered {attempt} times; the limit is {policy.max_attempts}"
    return None


def _reason(failure: Failure, attempt: int, policy: RetryPolicy) -> str:
    if failure is Failure.PERMANENT:
        return "permanent: retrying cannot help"
    if failure is Failure.EXHAUSTED:
        return past_the_limit(attempt, policy) or f"past the limit of {policy.max_attempts}"
    return f"still failing after {attempt} of {policy.max_attempts} attempts"


def _backoff(attempt: int, policy: RetryPolicy, rng: random.Random | None) -> float:
    return backoff(attempt, base=policy.backoff_base, cap=policy.backoff_cap, rng=rng)


def store_pause(failures: int) -> float:
    """How long the consumer waits after the store failed `failures` times in a row."""
    return min(STORE_PAUSE_CAP, STORE_PAUSE_FIRST * 2.0 ** min(max(failures - 1, 0), 64))


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
