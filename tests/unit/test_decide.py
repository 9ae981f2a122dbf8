"""What becomes of a delivery (workers/edge/decide.py), as a decision table, in-process."""

from __future__ import annotations

import random

import pytest

from workers.edge.accept import Delivery
from workers.edge.decide import (
    STORE_PAUSE_CAP,
    DeadLetter,
    Decision,
    Done,
    Failure,
    Requeue,
    Retry,
    RetryPolicy,
    backoff,
    decide,
    past_the_limit,
    store_pause,
)

POLICY = RetryPolicy(max_attempts=3, backoff_base=1.0, backoff_cap=60.0)
SEED = 7


def _delay(attempt: int) -> float:
    return backoff(attempt, base=1.0, cap=60.0, rng=random.Random(SEED))


# failure, attempt, store failures in a row, can retry (a task) -> the decision
TABLE: list[tuple[Failure | None, int, int, bool, Decision]] = [
    (None, 1, 0, True, Done()),
    (None, 3, 5, True, Done()),
    (Failure.TRANSIENT, 1, 0, True, Retry(_delay(1))),
    (Failure.TRANSIENT, 2, 0, True, Retry(_delay(2))),
    (Failure.TRANSIENT, 2, 1, True, Retry(_delay(2))),
    (Failure.TRANSIENT, 3, 0, True, DeadLetter("still failing after 3 of 3 attempts")),
    (Failure.TRANSIENT, 3, 1, True, Retry(_delay(3))),
    (Failure.PERMANENT, 1, 0, True, DeadLetter("permanent: retrying cannot help")),
    (Failure.PERMANENT, 1, 1, True, Retry(_delay(1))),
    (Failure.EXHAUSTED, 4, 0, True, DeadLetter("delivered 4 times; the limit is 3")),
    (Failure.EXHAUSTED, 4, 2, True, Retry(_delay(4))),
    (Failure.PERMANENT, 1, 0, False, DeadLetter("permanent: retrying cannot help")),
    (Failure.PERMANENT, 1, 1, False, Requeue(1.0)),
    (Failure.PERMANENT, 1, 3, False, Requeue(4.0)),
    (Failure.TRANSIENT, 1, 0, False, DeadLetter("still failing after 1 of 3 attempts")),
]


@pytest.mark.parametrize(("failure", "attempt", "store_failures", "can_retry", "wanted"), TABLE)
def test_each_delivery_gets_the_decision_of_its_row(
    failure: Failure | None, attempt: int, store_failures: int, can_retry: bool, wanted: Decision
) -> None:
    decision = decide(
        failure,
        attempt=attempt,
        policy=POLICY,
        store_failures=store_failures,
        can_retry=can_retry,
        rng=random.Random(SEED),
    )

    assert decision == wanted


@pytest.mark.parametrize("failure", list(Failure))
def test_no_failure_is_ever_lost_while_the_dead_letter_store_is_away(failure: Failure) -> None:
    for attempt in range(1, 10):
        for can_retry in (True, False):
            decision = decide(
                failure, attempt=attempt, policy=POLICY, store_failures=1, can_retry=can_retry
            )
            assert isinstance(decision, Retry | Requeue)


def test_a_transient_failure_is_retried_until_the_last_attempt_then_dead_lettered() -> None:
    decisions = [
        decide(Failure.TRANSIENT, attempt=n, policy=POLICY)
        for n in range(1, POLICY.max_attempts + 1)
    ]

    assert [type(d) for d in decisions] == [Retry, Retry, DeadLetter]


def test_a_permanent_failure_is_dead_lettered_at_once_whatever_attempts_remain() -> None:
    assert isinstance(decide(Failure.PERMANENT, attempt=1, policy=POLICY), DeadLetter)


def test_the_retry_delay_stays_between_half_and_all_of_its_ceiling() -> None:
    for attempt in range(1, 3):
        for seed in range(50):
            decision = decide(
                Failure.TRANSIENT, attempt=attempt, policy=POLICY, rng=random.Random(seed)
            )
            assert isinstance(decision, Retry)
            ceiling = 2.0 ** (attempt - 1)
            assert ceiling / 2 <= decision.delay <= ceiling


def test_a_delivery_past_the_limit_is_given_up_on_with_its_count() -> None:
    assert past_the_limit(3, POLICY) is None
    assert past_the_limit(4, POLICY) == "delivered 4 times; the limit is 3"


def test_the_pause_before_the_store_is_tried_again_doubles_up_to_its_cap() -> None:
    assert [store_pause(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert store_pause(10_000) == STORE_PAUSE_CAP


@pytest.mark.parametrize(("retries", "at_least"), [(0, 1), (1, 2), (7, 2), (10**9, 2)])
def test_a_retries_header_alone_never_makes_a_delivery_the_last_attempt(
    retries: int, at_least: int
) -> None:
    delivery = Delivery("imagegroups.stage_finished", "task-id", retries, redelivered=False)
    assert delivery.attempt_at_least() == at_least
    # While the count cannot be read (the database is away), that attempt is retried.
    decision = decide(Failure.TRANSIENT, attempt=delivery.attempt_at_least(), policy=POLICY)
    assert isinstance(decision, Retry)
